"""A write-ahead journal of file actions, the reversible steps it records, and undo.

Every step of ``dupfinder apply`` is first written to the journal as an
``intent`` record and flushed to disk, then carried out, then followed by a
``done`` record. Undo never trusts ``done`` alone: it reads each intent back
and looks at the file system to see how far that step got, so an apply
killed half way (SIGKILL, power cut) is undone as completely as a finished
one, and an undo killed half way can simply be run again.

The journal is JSON lines, one object per line, written with
``ensure_ascii`` so a path that is not UTF-8 survives as its ``\\udcXX``
escapes (``os.fsdecode``'s convention). Records::

    {"type": "begin", "version": 1, "id": ..., "action": ..., "created": ...}
    {"type": "intent", "n": 1, "op": "delete", "path": ..., "aside": ..., "sha256": ..., ...}
    {"type": "done", "n": 1}                   # or "failed" with a message
    {"type": "undone", "n": 1}                 # or "purged"
    {"type": "end"}

A step never destroys bytes: it puts the original *aside* (the destination of
``move``, a file in the trash, or the journal's backup folder for the other
actions) by a rename on the same file system, or by copy, fsync, checksum and
only then delete across file systems. Undo moves it back.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> with open(f"{d}/a.jpg", "wb") as f:
...     _ = f.write(b"photo")
>>> move_file(f"{d}/a.jpg", f"{d}/b.jpg")
>>> os.path.exists(f"{d}/a.jpg"), open(f"{d}/b.jpg", "rb").read()
(False, b'photo')
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

__all__ = [
    "JOURNAL_VERSION",
    "Journal",
    "JournalError",
    "Problem",
    "UndoResult",
    "PurgeResult",
    "read_journal",
    "undo",
    "purge",
    "do_step",
    "undo_step",
    "move_file",
    "sha256_file",
    "fsync_dir",
    "missing_dirs",
]

JOURNAL_VERSION = 1

# Errors of os.link that mean "this file system has no hard links", after
# which a plain rename does the same job.
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


def _checkpoint() -> None:
    """A point between two file operations where a crash is possible.

    Tests replace it (or set DUPFINDER_TEST_SLOW_STEPS=seconds and SIGKILL
    the process) to stop an apply at every point a power cut could.
    """
    delay = os.environ.get("DUPFINDER_TEST_SLOW_STEPS")
    if delay:
        time.sleep(float(delay))


class JournalError(OSError):
    """A journal that cannot be used: already there, locked, or not a journal."""


@dataclass(frozen=True, slots=True)
class Problem:
    """A file that an undo or purge could not handle, and why.

    >>> Problem("a.jpg", "a different file is now at this path").path
    'a.jpg'
    """

    path: str
    message: str


@dataclass(frozen=True, slots=True)
class UndoResult:
    """What an undo restored, and what it could not.

    >>> UndoResult(restored=("a.jpg",), problems=()).ok
    True
    """

    restored: tuple[str, ...]
    problems: tuple[Problem, ...]
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """Backups a purge deleted, and the bytes that freed.

    >>> PurgeResult(purged=(), freed_bytes=0, problems=()).freed_bytes
    0
    """

    purged: tuple[str, ...]
    freed_bytes: int
    problems: tuple[Problem, ...]
    dry_run: bool = False


def sha256_file(path: str) -> str:
    """The SHA-256 of a file's bytes, in hex.

    >>> import tempfile
    >>> p = tempfile.mktemp()
    >>> _ = open(p, "wb").write(b"")
    >>> sha256_file(p)[:16]
    'e3b0c44298fc1c14'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: str) -> None:
    """Flush a folder's entries to disk, so a rename in it survives a power cut."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # a folder we may not open (or Windows): nothing more to do
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename still stands
    finally:
        os.close(fd)


def missing_dirs(folder: str) -> list[str]:
    """The folders that ``os.makedirs(folder)`` would create, outermost first.

    >>> missing_dirs("/")
    []
    """
    out = []
    folder = os.path.abspath(folder)
    while not os.path.isdir(folder):
        out.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return out[::-1]


def _same_inode(a: str, b: str) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _copy_verified(src: str, tmp: str, expected: str | None) -> None:
    # O_EXCL: a leftover from a killed run is removed by undo, never reused.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(fd, "wb") as fout:
        while chunk := fin.read(1 << 20):
            h.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copystat(src, tmp)
    if expected is not None and h.hexdigest() != expected:
        os.unlink(tmp)
        msg = f"{src}: content is not the one recorded (sha256 {h.hexdigest()})"
        raise OSError(errno.EIO, msg)
    if sha256_file(tmp) != h.hexdigest():  # read back what the disk holds
        os.unlink(tmp)
        raise OSError(errno.EIO, f"{tmp}: the copy does not read back the same")


def _link_noreplace(src: str, dst: str) -> None:
    """Give ``src`` the name ``dst`` too; fails if ``dst`` exists (atomic)."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        # No hard links here (FAT, some network shares): check, then rename.
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "refusing to overwrite", dst) from None
        os.rename(src, dst)


def move_file(src: str, dst: str, *, tmp: str | None = None, expected: str | None = None) -> None:
    """Move a file to ``dst`` and never overwrite; across file systems by verified copy.

    On one file system the file gets its new name by ``link`` then loses the
    old one, so ``dst`` is never clobbered and a crash leaves one of the two
    names, or both on the same bytes. Across file systems it is copied to
    ``tmp`` beside ``dst``, fsync'd, read back and compared by SHA-256
    (against ``expected`` too, when given), renamed to ``dst`` and only then
    is ``src`` deleted.
    """
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "refusing to overwrite", dst)
    try:
        _link_noreplace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = tmp or os.path.join(os.path.dirname(dst), f".dupfinder-{os.getpid()}.tmp")
        _copy_verified(src, tmp, expected)
        _checkpoint()
        _link_noreplace(tmp, dst)
        if os.path.lexists(tmp):
            os.unlink(tmp)
        fsync_dir(os.path.dirname(dst))
        _checkpoint()
        os.unlink(src)
        fsync_dir(os.path.dirname(src))
        return
    _checkpoint()
    if os.path.lexists(src) and _same_inode(src, dst):
        os.unlink(src)
    fsync_dir(os.path.dirname(dst))
    fsync_dir(os.path.dirname(src))


class Journal:
    """An append-only JSON-lines file, each record flushed to disk before it returns.

    The file is locked while open, so two applies (or an apply and an undo)
    never interleave on one journal.

    >>> import tempfile
    >>> p = tempfile.mktemp(suffix=".jsonl")
    >>> with Journal(p, create=True) as j:
    ...     j.write({"type": "begin"})
    >>> list(read_journal(p))
    [{'type': 'begin'}]
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = False):
        self.path = os.path.abspath(os.fspath(path))
        flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
        try:
            self.fd = os.open(self.path, flags, 0o600)
        except FileExistsError:
            msg = f"{self.path}: journal already exists; give a new --journal file"
            raise JournalError(errno.EEXIST, msg) from None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self.fd)
                msg = f"{self.path}: journal is in use by another dupfinder process"
                raise JournalError(errno.EBUSY, msg) from None
        if create:
            fsync_dir(os.path.dirname(self.path))

    def write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"
        os.write(self.fd, line.encode("ascii"))
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_journal(path: str | os.PathLike) -> Iterator[dict]:
    """The records of a journal; a last line cut short by a crash is ignored.

    >>> import tempfile
    >>> p = tempfile.mktemp()
    >>> _ = open(p, "w").write('{"type": "begin"}\\n{"type": "inte')
    >>> [r["type"] for r in read_journal(p)]
    ['begin']
    """
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            if i >= len(lines) - 2:
                # The intent was not on disk, so its step never started.
                continue
            msg = f"{os.fspath(path)}: line {i + 1} is not a journal record"
            raise JournalError(errno.EINVAL, msg) from None
        yield record


# --- one step, forwards ---------------------------------------------------


def do_step(intent: dict) -> None:
    """Carry out one journalled step; raises OSError, after which undo_step rolls it back.

    ``op`` is ``move``, ``delete`` or ``trash`` (the file goes to ``aside``)
    or ``hardlink`` or ``symlink`` (the file goes to ``aside`` and a link to
    ``target`` takes its place, through ``tmp`` so the name never vanishes).
    """
    op, path, aside = intent["op"], intent["path"], intent["aside"]
    # Backups and trash hold people's files: private, as the trash spec asks.
    mode = 0o777 if op == "move" else 0o700
    for folder in intent.get("made_dirs", ()):
        os.makedirs(folder, mode=mode, exist_ok=True)
    _checkpoint()
    if op == "trash":
        # The .trashinfo is written first, with O_EXCL: it reserves the name.
        fd = os.open(intent["info"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="ascii") as f:
            f.write(intent["info_text"])
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(os.path.dirname(intent["info"]))
        _checkpoint()
    if op in ("move", "delete", "trash"):
        move_file(path, aside, tmp=intent.get("tmp"), expected=intent["sha256"])
        return
    # hardlink / symlink: keep the original under a second name first, so the
    # path is never without a file and the bytes are never without a name.
    _link_noreplace(path, aside)
    fsync_dir(os.path.dirname(aside))
    _checkpoint()
    tmp = intent["tmp"]
    if op == "hardlink":
        os.link(intent["target"], tmp)
    else:
        os.symlink(intent["target"], tmp)
    _checkpoint()
    os.rename(tmp, path)
    fsync_dir(os.path.dirname(path))


# --- one step, backwards --------------------------------------------------


def _is_our_link(intent: dict) -> bool:
    path = intent["path"]
    if intent["op"] == "symlink":
        return os.path.islink(path) and os.readlink(path) == intent["target"]
    if intent["op"] == "hardlink":
        try:
            st = os.lstat(path)
        except OSError:
            return False
        return [st.st_dev, st.st_ino] == intent.get("target_id")
    return False


def _holds_original(path: str, intent: dict) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not os.path.isfile(path) or os.path.islink(path) or st.st_size != intent["size"]:
        return False
    return sha256_file(path) == intent["sha256"]


def _remove_info(intent: dict) -> None:
    info = intent.get("info")
    if not info or not os.path.lexists(info):
        return
    # Only the .trashinfo this step wrote: never another program's.
    with open(info, encoding="ascii", errors="replace") as f:
        if f.read() == intent["info_text"]:
            os.unlink(info)


def _remove_dirs(intent: dict) -> None:
    for folder in reversed(intent.get("made_dirs", ())):
        try:
            os.rmdir(folder)
        except OSError:
            pass  # not empty (someone else's files) or gone: leave it


def undo_step(intent: dict) -> str | None:
    """Put one step's file back at its path, from whatever state it reached.

    Returns None when the original bytes are at ``path`` again (or never
    left), else a message saying where they are. Never overwrites a file
    that is not this step's own. ``tmp`` (a link being made, or a copy
    across file systems) and ``undo_tmp`` (a copy back) are this step's own
    names, so a leftover one is removed.
    """
    path, aside = intent["path"], intent["aside"]
    undo_tmp = intent.get("undo_tmp")
    for leftover in (intent.get("tmp"), undo_tmp):
        if leftover and os.path.lexists(leftover):
            os.unlink(leftover)
    if os.path.lexists(aside):
        if os.path.lexists(path):
            if _same_inode(path, aside):  # crashed between link and unlink
                os.unlink(aside)
            elif _is_our_link(intent):
                if not _holds_original(aside, intent):
                    return f"the backup {aside} no longer holds the original bytes"
                os.rename(aside, path)  # atomically replaces the link
                fsync_dir(os.path.dirname(path))
            elif _holds_original(path, intent) and _holds_original(aside, intent):
                os.unlink(aside)  # a cross-device copy that finished before the delete
            else:
                return f"a different file is now at this path; the original is kept at {aside}"
        else:
            move_file(aside, path, tmp=undo_tmp, expected=intent["sha256"])
    elif not os.path.lexists(path):
        return "the original is gone: neither at its path nor at " + aside
    _remove_info(intent)
    _remove_dirs(intent)
    if not _holds_original(path, intent):
        return "the file at this path is not the original any more (its bytes changed)"
    return None


# --- whole journals ---------------------------------------------------------


def _load(path: str) -> tuple[dict, list[dict], dict[int, set[str]]]:
    begin: dict = {}
    intents: list[dict] = []
    states: dict[int, set[str]] = {}
    for record in read_journal(path):
        kind = record.get("type")
        if kind == "begin":
            begin = record
        elif kind == "intent":
            intents.append(record)
        elif "n" in record:
            states.setdefault(record["n"], set()).add(kind)
    if not begin:
        msg = f"{path}: not a dupfinder journal (no begin record)"
        raise JournalError(errno.EINVAL, msg)
    if begin.get("version") != JOURNAL_VERSION:
        msg = f"{path}: journal version {begin.get('version')!r}, expected {JOURNAL_VERSION}"
        raise JournalError(errno.EINVAL, msg)
    return begin, intents, states


def undo(journal_path: str | os.PathLike, *, dry_run: bool = False) -> UndoResult:
    """Put back every file an apply touched, as the journal records it, newest first.

    Works on a journal whose apply was killed half way, and can be run again
    after an undo that was itself interrupted: steps already undone are
    passed over. A file that cannot be restored is returned as a Problem.

    >>> import tempfile
    >>> p = tempfile.mktemp()
    >>> with Journal(p, create=True) as j:
    ...     j.write({"type": "begin", "version": 1, "id": "x"})
    >>> undo(p)
    UndoResult(restored=(), problems=(), dry_run=False)
    """
    path = os.fspath(journal_path)
    begin, intents, states = _load(path)
    restored: list[str] = []
    problems: list[Problem] = []
    pending = [i for i in reversed(intents) if not states.get(i["n"], set()) & {"undone"}]
    if dry_run:
        for intent in pending:
            if "purged" in states.get(intent["n"], set()):
                problems.append(Problem(intent["path"], "its backup was purged"))
            else:
                restored.append(intent["path"])
        return UndoResult(tuple(restored), tuple(problems), dry_run=True)
    with Journal(path) as journal:
        for intent in pending:
            n = intent["n"]
            if "purged" in states.get(n, set()):
                problems.append(Problem(intent["path"], "its backup was purged; it cannot come back"))
                continue
            try:
                message = undo_step(intent)
            except OSError as exc:
                message = f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
            if message is None:
                journal.write({"type": "undone", "n": n})
                restored.append(intent["path"])
            else:
                problems.append(Problem(intent["path"], message))
        backup_dir = begin.get("backup_dir")
        if backup_dir and not problems:
            _rmdir_tree(backup_dir)
    return UndoResult(tuple(restored), tuple(problems))


def _rmdir_tree(folder: str) -> None:
    # Removes empty folders only: a backup that is still there stays.
    for root, _dirs, _files in os.walk(folder, topdown=False):
        try:
            os.rmdir(root)
        except OSError:
            pass


def purge(journal_path: str | os.PathLike, *, dry_run: bool = False) -> PurgeResult:
    """Delete the backups a finished apply kept, freeing their space; undo then cannot restore them.

    Only ``delete``, ``hardlink`` and ``symlink`` keep backups. Moved files
    are where the user asked, and trashed ones are in the trash, which the
    desktop empties; steps that never finished are left for undo.

    >>> import tempfile
    >>> p = tempfile.mktemp()
    >>> with Journal(p, create=True) as j:
    ...     j.write({"type": "begin", "version": 1, "id": "x"})
    >>> purge(p).freed_bytes
    0
    """
    path = os.fspath(journal_path)
    begin, intents, states = _load(path)
    purged: list[str] = []
    problems: list[Problem] = []
    freed = 0
    todo = [
        i for i in intents
        if i["op"] in ("delete", "hardlink", "symlink")
        and not states.get(i["n"], set()) & {"undone", "purged", "failed"}
    ]
    with nullcontext() if dry_run else Journal(path) as journal:
        for intent in todo:
            n, aside = intent["n"], intent["aside"]
            if "done" not in states.get(n, set()):
                problems.append(Problem(intent["path"], "its step did not finish; run undo first"))
                continue
            try:
                size = os.lstat(aside).st_size
                if not dry_run:
                    os.unlink(aside)
                    os.rmdir(os.path.dirname(aside))
            except FileNotFoundError:
                size = 0
            except OSError as exc:
                problems.append(Problem(aside, exc.strerror or str(exc)))
                continue
            freed += size
            purged.append(aside)
            if not dry_run:
                journal.write({"type": "purged", "n": n})
    if not dry_run and begin.get("backup_dir"):
        _rmdir_tree(begin["backup_dir"])
    return PurgeResult(tuple(purged), freed, tuple(problems), dry_run=dry_run)
