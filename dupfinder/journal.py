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
>>> _ = open(f"{d}/b.jpg", "wb").write(b"photo")
>>> step = {"op": "delete", "path": f"{d}/b.jpg", "aside": f"{d}/backup/1/b.jpg",
...         "made_dirs": [f"{d}/backup", f"{d}/backup/1"], "size": 5,
...         "sha256": fileops.sha256_file(f"{d}/b.jpg")}
>>> do_step(step)
>>> os.listdir(d), os.listdir(f"{d}/backup/1")
(['backup'], ['b.jpg'])
>>> undo_step(step), os.listdir(d), open(f"{d}/b.jpg", "rb").read()
(None, ['b.jpg'], b'photo')
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

from . import fileops

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
]

JOURNAL_VERSION = 1


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
            raise JournalError(msg) from None
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
                raise JournalError(msg) from None
        if create:
            fileops.fsync_dir(os.path.dirname(self.path))
        else:
            self._drop_torn_line()

    def _drop_torn_line(self) -> None:
        # A process killed inside write() leaves a line without its newline;
        # its step never started (the intent comes first), so it is cut off
        # rather than glued to the next record.
        with open(self.path, "rb") as f:
            data = f.read()
        if data and not data.endswith(b"\n"):
            os.ftruncate(self.fd, data.rfind(b"\n") + 1)
            os.fsync(self.fd)

    def write(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")
        while line:
            line = line[os.write(self.fd, line):]
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
            raise JournalError(msg) from None
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
    fileops.checkpoint()
    if op == "trash":
        # The .trashinfo is written first, with O_EXCL: it reserves the name.
        fd = os.open(intent["info"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="ascii") as f:
            f.write(intent["info_text"])
            f.flush()
            os.fsync(f.fileno())
        fileops.fsync_dir(os.path.dirname(intent["info"]))
        fileops.checkpoint()
    if op in ("move", "delete", "trash"):
        fileops.move_file(path, aside, tmp=intent.get("tmp"), expected=intent["sha256"])
        return
    # hardlink / symlink: keep the original under a second name first, so the
    # path is never without a file and the bytes are never without a name.
    fileops.link_noreplace(path, aside)
    fileops.fsync_dir(os.path.dirname(aside))
    fileops.checkpoint()
    tmp = intent["tmp"]
    if op == "hardlink":
        os.link(intent["target"], tmp)
    else:
        os.symlink(intent["target"], tmp)
    fileops.checkpoint()
    os.rename(tmp, path)
    fileops.fsync_dir(os.path.dirname(path))


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
    return fileops.sha256_file(path) == intent["sha256"]


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
            if fileops.same_inode(path, aside):  # crashed between link and unlink
                os.unlink(aside)
            elif _is_our_link(intent):
                if not _holds_original(aside, intent):
                    return f"the backup {aside} no longer holds the original bytes"
                os.rename(aside, path)  # atomically replaces the link
                fileops.fsync_dir(os.path.dirname(path))
            elif _holds_original(path, intent) and _holds_original(aside, intent):
                os.unlink(aside)  # a cross-device copy that finished before the delete
            else:
                return f"a different file is now at this path; the original is kept at {aside}"
        else:
            fileops.move_file(aside, path, tmp=undo_tmp, expected=intent["sha256"])
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
        raise JournalError(msg)
    if begin.get("version") != JOURNAL_VERSION:
        msg = f"{path}: journal version {begin.get('version')!r}, expected {JOURNAL_VERSION}"
        raise JournalError(msg)
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
    todo = [  # newest first, so each step's own folders empty out before its elders'
        i for i in reversed(intents)
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
                    _remove_dirs(intent)
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
