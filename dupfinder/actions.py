"""Act on a reviewed report: plan, then apply (a dry run unless asked), and undo.

The input is the CSV report as the person left it after review
(:func:`dupfinder.report.read_csv`): a changed ``keep`` column is obeyed, a
deleted row is not touched, a group with no kept file is skipped whole, and
every kept file stays. :func:`plan_actions` decides from the rows alone;
:func:`apply_plan` checks each file again just before its step (size,
modification time and perceptual hash as scanned, and the kept file too) and
skips what changed since the scan.

Every step can be undone byte for byte from its journal
(:mod:`dupfinder.journal`). So ``delete`` does not free space at once: it
moves the duplicates into a backup folder beside the journal (by rename on
the same file system, so instantly), and :func:`purge` deletes that folder's
files once the person is sure. ``trash`` uses the desktop's trash
(freedesktop.org spec) instead, which the desktop empties.

>>> rows = [
...     {"group": "1", "path": "/p/a.jpg", "keep": "yes", "bytes": "3",
...      "modified": "2024-01-01T00:00:00Z", "hash": "00ff00ff00ff00ff"},
...     {"group": "1", "path": "/p/b.jpg", "keep": "no", "bytes": "3",
...      "modified": "2024-01-01T00:00:00Z", "hash": "00ff00ff00ff00ff"},
... ]
>>> plan = plan_actions(rows, action="delete")
>>> [describe(s) for s in plan.steps]
['delete /p/b.jpg (keeping /p/a.jpg)']
"""

from __future__ import annotations

import math
import os
import stat
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from . import trash as _trash
from . import fileops
from .fileops import missing_dirs, sha256_file
from .fingerprint import HashSpec, fingerprint_file
from .journal import (
    JOURNAL_VERSION,
    Journal,
    PurgeResult,
    UndoResult,
    do_step,
    purge,
    undo,
    undo_step,
)
from .models import ReportFormatError, ScanError, UsageError
from .report import format_time

__all__ = [
    "ACTIONS",
    "ReportRow",
    "Step",
    "Skipped",
    "Plan",
    "ApplyResult",
    "UndoResult",
    "PurgeResult",
    "parse_rows",
    "plan_actions",
    "apply_plan",
    "describe",
    "undo",
    "purge",
    "default_backup_dir",
]

ACTIONS = ("move", "hardlink", "symlink", "delete", "trash")
_REQUIRED = ("group", "path", "keep", "bytes", "modified", "hash")
_YES = {"yes", "y", "true", "1", "x"}
_NO = {"no", "n", "false", "0", ""}  # blank: "tick x to keep" leaves the rest empty


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One file of the reviewed report: what the scan saw, and the person's keep mark.

    >>> ReportRow("1", "/p/a.jpg", True, 3, "2024-01-01T00:00:00Z", "00ff00ff00ff00ff").keep
    True
    """

    group: str
    path: str  # absolute
    keep: bool
    size: int
    modified: str
    hash: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file left alone, and why.

    >>> Skipped("/p/b.jpg", "it changed since the scan", group="1").reason
    'it changed since the scan'
    """

    path: str
    reason: str
    group: str = ""


@dataclass(frozen=True, slots=True)
class Step:
    """One file to act on: the duplicate, the kept file it relies on, and where it goes.

    ``dest`` is the new path for ``move`` and None otherwise.
    """

    action: str
    file: ReportRow
    keep: ReportRow
    dest: str | None = None

    @property
    def path(self) -> str:
        return self.file.path


@dataclass(frozen=True, slots=True)
class Plan:
    """What an apply would do, and what it leaves alone with the reasons.

    ``algorithm``, ``compat`` and ``orient`` say how the report's hashes were
    made, so each file can be checked against its own before acting.
    """

    action: str
    steps: tuple[Step, ...]
    skipped: tuple[Skipped, ...]
    algorithm: str = "phash"
    compat: str | None = None
    orient: bool = True


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What an apply did (or in a dry run would do), skipped, and failed.

    ``failed`` steps hit an error half way and were rolled back. ``bytes``
    is the size of the files in ``done``.
    """

    dry_run: bool
    done: tuple[Step, ...]
    skipped: tuple[Skipped, ...]
    failed: tuple[Skipped, ...] = ()
    journal: str | None = None

    @property
    def bytes(self) -> int:
        return sum(s.file.size for s in self.done)


def _keep_value(text: str) -> bool | None:
    value = text.strip().lower()
    return True if value in _YES else False if value in _NO else None


def _hash_bits_ok(hex_text: str) -> bool:
    bits = len(hex_text) * 4
    side = math.isqrt(bits)
    return bits > 0 and side * side == bits and side % 8 == 0


def parse_rows(
    rows: Iterable[Mapping[str, str]],
) -> tuple[dict[str, list[ReportRow]], list[Skipped]]:
    """Group the report's rows; a group with a row that cannot be read is skipped whole.

    >>> groups, skipped = parse_rows([{"group": "1", "path": "a", "keep": "maybe",
    ...     "bytes": "1", "modified": "x", "hash": "00"}])
    >>> groups, skipped[0].reason
    ({}, "keep is 'maybe', not yes or no; nothing in group 1 is touched")
    """
    groups: dict[str, list[ReportRow]] = {}
    bad: dict[str, list[Skipped]] = {}
    for raw in rows:
        missing = [c for c in _REQUIRED if c not in raw]
        if missing:
            msg = f"the report has no {', '.join(missing)} column; it must be a dupfinder CSV report"
            raise ReportFormatError(msg)
        group, path = raw["group"].strip(), raw["path"]
        keep = _keep_value(raw["keep"])
        problem = None
        if not path:
            problem = "the path is empty"
        elif keep is None:
            problem = f"keep is {raw['keep']!r}, not yes or no"
        elif not raw["bytes"].strip().isdigit():
            problem = f"bytes is {raw['bytes']!r}, not a number"
        elif not _hash_bits_ok(raw["hash"].strip()):
            problem = f"hash {raw['hash']!r} is not a dupfinder fingerprint"
        if problem:
            bad.setdefault(group, []).append(Skipped(os.path.abspath(path or "."), problem, group))
            continue
        row = ReportRow(group, os.path.abspath(path), keep, int(raw["bytes"]),
                        raw["modified"].strip(), raw["hash"].strip().lower())
        groups.setdefault(group, []).append(row)
    skipped = []
    for group, problems in bad.items():
        for s in problems:
            skipped.append(Skipped(s.path, f"{s.reason}; nothing in group {group} is touched", group))
        for row in groups.pop(group, []):
            skipped.append(Skipped(row.path, f"another row of group {group} cannot be read", group))
    return groups, skipped


def _real(path: str) -> str:
    return os.path.realpath(path)


def _under(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives
        return False


def plan_actions(
    rows: Iterable[Mapping[str, str]],
    *,
    action: str,
    to: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    protect: Sequence[str | os.PathLike] = (),
    reference: Sequence[str | os.PathLike] = (),
    algorithm: str = "phash",
    compat: str | None = None,
    orient: bool = True,
) -> Plan:
    """Decide which files to act on from the reviewed rows; touches nothing.

    Files marked keep are never acted on, nor any file under a ``protect``
    or ``reference`` folder (compared by real path, so a symbolic link does
    not get around it). ``move`` needs ``to`` and keeps each file's place
    relative to ``root`` (default: the moved files' common folder).
    """
    if action not in ACTIONS:
        msg = f"unknown action {action!r}; choose from {', '.join(ACTIONS)}"
        raise UsageError(msg)
    if (action == "move") != (to is not None):
        msg = "move needs a destination folder (--to)" if to is None else "--to is only for move"
        raise UsageError(msg)
    guarded = [_real(os.fspath(p)) for p in (*protect, *reference)]
    if to is not None and any(_under(_real(os.fspath(to)), g) for g in guarded):
        msg = f"{os.fspath(to)} is inside a protected folder; choose another destination"
        raise UsageError(msg)
    groups, skipped = parse_rows(rows)
    kept_real = {_real(r.path) for rs in groups.values() for r in rs if r.keep}
    seen: set[str] = set()
    steps: list[Step] = []
    for group, group_rows in groups.items():
        kept = [r for r in group_rows if r.keep]
        for row in group_rows:
            if row.keep:
                continue
            real = _real(row.path)
            shield = next((g for g in guarded if _under(real, g)), None)
            if not kept:
                reason = f"group {group} has no file marked keep=yes; none of its files is touched"
            elif real in kept_real:
                reason = "it is a file marked keep (in this or another group)"
            elif shield is not None:
                reason = f"it is under the protected folder {shield}"
            elif real in seen:
                reason = "it is listed twice"
            elif os.path.islink(row.path):
                reason = "it is a symbolic link; only regular files are acted on"
            else:
                seen.add(real)
                steps.append(Step(action, row, kept[0]))
                continue
            skipped.append(Skipped(row.path, reason, group))
    if action == "move":
        steps, moved_skips = _place(steps, os.path.abspath(os.fspath(to)), root)
        skipped.extend(moved_skips)
    return Plan(action, tuple(steps), tuple(skipped), algorithm, compat, orient)


def _place(steps: list[Step], to: str, root) -> tuple[list[Step], list[Skipped]]:
    if root is None:
        folders = [os.path.dirname(s.path) for s in steps]
        base = os.path.commonpath(folders) if folders else to
    else:
        base = os.path.abspath(os.fspath(root))
    placed, skipped = [], []
    for s in steps:
        dest = os.path.join(to, os.path.relpath(s.path, base))
        if not _under(s.path, base):
            skipped.append(Skipped(s.path, f"it is not under --root {base}", s.file.group))
        elif _under(s.path, to):
            skipped.append(Skipped(s.path, "it is already in the destination folder", s.file.group))
        elif os.path.lexists(dest):
            skipped.append(Skipped(s.path, f"{dest} exists; refusing to overwrite", s.file.group))
        else:
            placed.append(Step(s.action, s.file, s.keep, dest))
    return placed, skipped


def describe(step: Step, *, dry_run: bool = False) -> str:
    """One line saying what a step does.

    >>> row = ReportRow("1", "/p/b.jpg", False, 3, "", "00")
    >>> describe(Step("hardlink", row, ReportRow("1", "/p/a.jpg", True, 3, "", "00")), dry_run=True)
    'would hardlink /p/b.jpg -> /p/a.jpg'
    """
    if step.action == "move":
        text = f"move {step.path} -> {step.dest}"
    elif step.action in ("hardlink", "symlink"):
        text = f"{step.action} {step.path} -> {step.keep.path}"
    else:
        text = f"{step.action} {step.path} (keeping {step.keep.path})"
    return f"would {text}" if dry_run else text


def default_backup_dir(journal_path: str | os.PathLike) -> str:
    """The backup folder of a journal: its name without the extension, plus ``.backup``.

    >>> default_backup_dir("/r/dups-apply-20240101T000000Z.jsonl")
    '/r/dups-apply-20240101T000000Z.backup'
    """
    return os.path.splitext(os.path.abspath(os.fspath(journal_path)))[0] + ".backup"


# --- checks just before a step -----------------------------------------------------


def _spec(row: ReportRow, plan: Plan) -> HashSpec:
    return HashSpec(algorithm=plan.algorithm, hash_size=math.isqrt(len(row.hash) * 4),
                    compat=plan.compat, orient=plan.orient)


def _check(row: ReportRow, plan: Plan, st: os.stat_result | None = None) -> str | None:
    """Why ``row``'s file is no longer the one scanned, or None when it still is."""
    try:
        st = st if st is not None else os.lstat(row.path)
    except FileNotFoundError:
        return "it no longer exists"
    except OSError as exc:
        return f"it cannot be read: {exc.strerror or exc}"
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        return "it is no longer a regular file"
    if st.st_size != row.size:
        return f"its size changed since the scan ({row.size} -> {st.st_size} bytes)"
    now = format_time(st.st_mtime_ns)
    if now != row.modified:
        return f"it was modified since the scan ({row.modified} -> {now})"
    found = fingerprint_file(row.path, _spec(row, plan))
    if isinstance(found, ScanError):
        return f"it cannot be decoded any more: {found.message}"
    if found.hash != row.hash:
        # Size and time are the scan's: more likely the report was made with
        # other hash settings than that the pixels changed in place.
        return (f"its picture changed since the scan (hash {row.hash} -> {found.hash}; its size and time did "
                f"not), or the report was made with another --algorithm, --compat or --no-orient: give apply the same")
    return None


class _KeptChecks:
    """Checks each kept file once, again only if its stat changes between steps."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.seen: dict[tuple, str | None] = {}

    def __call__(self, row: ReportRow) -> tuple[str | None, os.stat_result | None]:
        try:
            st = os.stat(row.path)
        except OSError:
            return f"the kept file {row.path} is gone", None
        key = (row, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self.seen:
            reason = _check(row, self.plan, st)
            self.seen[key] = None if reason is None else f"the kept file {row.path}: {reason}"
        return self.seen[key], st


def _backup_folder(path: str, backup_dir: str, journal_id: str) -> str | None:
    """A folder for ``path``'s backup on its own file system, so a rename puts it there."""
    dev = os.stat(os.path.dirname(path)).st_dev
    if _trash.device(backup_dir) == dev:
        return backup_dir
    top = _trash.mount_point(os.path.dirname(path))
    folder = os.path.join(top, f".dupfinder-backup-{os.getuid()}", journal_id)
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return folder if os.access(existing, os.W_OK) else None


def _intent(step: Step, plan: Plan, n: int, ctx: dict, st: os.stat_result,
            kept_st: os.stat_result) -> dict | str:
    """The journal record of a step: every name it will use; or why it cannot run."""
    path, name = step.path, os.path.basename(step.path)
    folder = os.path.dirname(path)
    tag = f"{ctx['id']}-{n}"
    record = {
        "type": "intent", "n": n, "op": step.action, "group": step.file.group, "path": path,
        "keep": step.keep.path, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
        "undo_tmp": os.path.join(folder, f".dupfinder-undo-{tag}.tmp"),
    }
    if step.action == "move":
        if os.path.lexists(step.dest):
            return f"{step.dest} exists; refusing to overwrite"
        record.update(aside=step.dest, made_dirs=missing_dirs(os.path.dirname(step.dest)),
                      tmp=os.path.join(os.path.dirname(step.dest), f".dupfinder-{tag}.tmp"))
    elif step.action == "trash":
        place = _trash.trash_for(path, trash_dir=ctx["trash_dir"])
        if isinstance(place, str):
            return place
        aside, info, text = _trash.reserve_name(place, path)
        record.update(aside=aside, info=info, info_text=text,
                      made_dirs=missing_dirs(place.files) + missing_dirs(place.info),
                      tmp=os.path.join(place.files, f".dupfinder-{tag}.tmp"))
    else:
        if step.action == "hardlink" and kept_st.st_dev != st.st_dev:
            return "it is on another file system than the kept file; a hard link cannot cross"
        if step.action == "hardlink" and kept_st.st_ino == st.st_ino:
            return "it is already a hard link to the kept file"
        base = _backup_folder(path, ctx["backup_dir"], ctx["id"])
        if base is None:
            return "no folder for its backup on its file system (undo needs one); move it instead"
        holder = os.path.join(base, str(n))
        record.update(aside=os.path.join(holder, name), made_dirs=missing_dirs(holder),
                      tmp=os.path.join(folder, f".dupfinder-{tag}.tmp"))
        if step.action in ("hardlink", "symlink"):
            record.update(target=os.path.abspath(step.keep.path),
                          target_id=[kept_st.st_dev, kept_st.st_ino])
    return record


def _prepare(step: Step, plan: Plan, n: int, ctx: dict, kept_check: _KeptChecks, *,
             dry_run: bool) -> dict | str:
    """Check the step's files again and name everything it will use; or say why not."""
    reason, kept_st = kept_check(step.keep)
    if reason is not None:
        return reason
    try:
        st = os.lstat(step.path)
        reason = _check(step.file, plan, st)
        if reason is not None:
            return reason
        record = _intent(step, plan, n, ctx, st, kept_st)
        if isinstance(record, dict) and not dry_run:
            # The bytes undo must bring back, and checks a cross-device copy.
            record["sha256"] = sha256_file(step.path)
        return record
    except FileNotFoundError:
        return "it no longer exists"
    except OSError as exc:
        return f"it cannot be read: {exc.strerror or exc}"


def apply_plan(
    plan: Plan,
    *,
    journal_path: str | os.PathLike | None = None,
    dry_run: bool = True,
    backup_dir: str | os.PathLike | None = None,
    trash_dir: str | os.PathLike | None = None,
) -> ApplyResult:
    """Carry out a plan, journalling each step; a dry run (the default) only checks and lists.

    Just before each step the file and its kept file are checked to be the
    ones scanned; a step that fails half way is rolled back and listed in
    ``failed``. ``backup_dir`` (default: beside the journal) holds what
    ``delete``, ``hardlink`` and ``symlink`` replace until :func:`purge`;
    ``trash_dir`` (or $DUPFINDER_TRASH_DIR) replaces the desktop trash.
    """
    if not dry_run and journal_path is None:
        raise UsageError("a journal file is needed to act (it is what undo reads)")
    journal_path = os.path.abspath(os.fspath(journal_path)) if journal_path else None
    ctx = {
        "id": uuid.uuid4().hex[:12],
        "backup_dir": os.path.abspath(os.fspath(backup_dir)) if backup_dir
        else default_backup_dir(journal_path or "dupfinder-journal.jsonl"),
        "trash_dir": os.fspath(trash_dir) if trash_dir else os.environ.get("DUPFINDER_TRASH_DIR"),
    }
    done: list[Step] = []
    skipped: list[Skipped] = list(plan.skipped)
    failed: list[Skipped] = []
    kept_check = _KeptChecks(plan)
    journal = None
    if not dry_run:
        journal = Journal(journal_path, create=True)
        journal.write({"type": "begin", "version": JOURNAL_VERSION, "id": ctx["id"],
                       "action": plan.action, "backup_dir": ctx["backup_dir"],
                       "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
    try:
        for n, step in enumerate(plan.steps, start=1):
            group = step.file.group
            record = _prepare(step, plan, n, ctx, kept_check, dry_run=dry_run)
            if isinstance(record, str):
                skipped.append(Skipped(step.path, record, group))
                continue
            if dry_run:
                done.append(step)
                continue
            journal.write(record)
            try:
                do_step(record)
            except OSError as exc:
                message = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
                rolled = _roll_back(record)
                journal.write({"type": "failed", "n": n, "message": message})
                if rolled is None:
                    journal.write({"type": "undone", "n": n})
                else:
                    message += f"; and rolling back: {rolled}"
                failed.append(Skipped(step.path, message, group))
                continue
            fileops.checkpoint()  # a crash here leaves a finished step with no "done": undo copes
            journal.write({"type": "done", "n": n})
            done.append(step)
        if journal is not None:
            journal.write({"type": "end", "done": len(done)})
    finally:
        if journal is not None:
            journal.close()
    return ApplyResult(dry_run, tuple(done), tuple(skipped), tuple(failed), journal_path)


def _roll_back(record: dict) -> str | None:
    try:
        return undo_step(record)
    except OSError as exc:
        return str(exc)
