"""The ``apply``, ``undo`` and ``purge`` sub-commands: argparse glue over :mod:`dupfinder.actions`.

``register(subparsers)`` adds them to the ``dupfinder`` parser; each sets
``handler(args) -> int``: 0 when all went well, 2 on an error (bad usage, an
unreadable report or journal, a step that failed, a file undo could not put
back). Steps go to standard output, messages to standard error.

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="dupfinder")
>>> register(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["apply", "dups.csv", "--action", "delete"])
>>> args.yes, args.handler is run_apply
(False, True)
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone

from .fingerprint import ALGORITHMS, COMPAT_MODES
from .actions import ACTIONS, apply_plan, describe, plan_actions, purge, undo
from .html_report import human_size
from .cli_common import ExitStatus, print_error, stdout
from .models import DupfinderError
from .report import read_csv

__all__ = ["register", "run_apply", "run_undo", "run_purge", "default_journal_path"]

_OK = int(ExitStatus.NO_DUPLICATES)
_ERROR = int(ExitStatus.ERROR)


def register(subparsers) -> None:
    """Add ``apply``, ``undo`` and ``purge`` to an ``add_subparsers()`` object."""
    a = subparsers.add_parser(
        "apply",
        help="act on a reviewed CSV report: move, link, delete or trash the duplicates",
        description="Act on the files of a CSV report that are not marked keep. Without --yes "
        "this is a dry run that changes nothing and lists what would happen. Every step is "
        "journalled first, so `dupfinder undo JOURNAL --yes` puts every file back.",
    )
    a.add_argument("report", metavar="REPORT.csv", help="a CSV report from `dupfinder scan`, "
                   "after review: edit the keep column, delete rows to leave files alone")
    a.add_argument(
        "--action", required=True, choices=ACTIONS,
        help="move: into --to DIR; hardlink/symlink: replace with a link to the kept file; "
        "delete: into the journal's backup folder until `dupfinder purge`; trash: the desktop trash",
    )
    a.add_argument("--to", metavar="DIR", help="destination folder of --action move")
    a.add_argument("--root", metavar="DIR", help="with move: files keep their place relative to "
                   "DIR under --to (default: the moved files' common folder)")
    a.add_argument("--yes", "-y", action="store_true",
                   help="act; without it nothing on disk changes and the steps are only listed")
    a.add_argument("--protect", action="append", default=[], metavar="DIR",
                   help="never touch a file under DIR (repeatable)")
    a.add_argument("--reference", action="append", default=[], metavar="DIR",
                   help="a folder of originals: never touched, like --protect (repeatable)")
    a.add_argument("--journal", metavar="FILE", help="the undo journal to write (default: beside "
                   "the report, named REPORT-apply-TIMESTAMP.jsonl)")
    a.add_argument("--algorithm", "-a", choices=ALGORITHMS, default="phash",
                   help="the hash the report was made with, to check that each file is still "
                   "the one scanned (default: phash)")
    a.add_argument("--compat", choices=COMPAT_MODES, default=None,
                   help="the report was made with --compat imagehash: check hashes the same way")
    a.add_argument("--no-orient", dest="orient", action="store_false",
                   help="the report was made with --no-orient: check hashes the same way")
    a.add_argument("--trash-dir", metavar="DIR", help="use DIR (with files/ and info/ inside) "
                   "instead of the desktop trash (also: $DUPFINDER_TRASH_DIR)")
    a.set_defaults(handler=run_apply)

    u = subparsers.add_parser(
        "undo", help="put back every file an apply touched, from its journal",
        description="Restore the files an apply moved, linked, deleted or trashed, byte for "
        "byte, even if that apply was killed half way. A dry run unless --yes.",
    )
    u.add_argument("journal", metavar="JOURNAL", help="the journal file `dupfinder apply` wrote")
    u.add_argument("--yes", "-y", action="store_true",
                   help="restore; without it the files are only listed")
    u.set_defaults(handler=run_undo)

    p = subparsers.add_parser(
        "purge", help="free the space of the backups an apply kept (undo is then impossible)",
        description="Delete the backups that --action delete, hardlink and symlink keep beside "
        "the journal. A dry run unless --yes.",
    )
    p.add_argument("journal", metavar="JOURNAL", help="the journal file `dupfinder apply` wrote")
    p.add_argument("--yes", "-y", action="store_true",
                   help="delete the backups; without them they are only listed")
    p.set_defaults(handler=run_purge)


def default_journal_path(report: str, *, now: datetime | None = None) -> str:
    """A new journal name beside the report, with the time in UTC.

    >>> default_journal_path("/r/dups.csv", now=datetime(2024, 5, 1, 12, 0, 0))
    '/r/dups-apply-20240501T120000Z.jsonl'
    """
    now = now or datetime.now(timezone.utc)
    base = f"{os.path.splitext(os.path.abspath(report))[0]}-apply-{now.strftime('%Y%m%dT%H%M%SZ')}"
    path, i = f"{base}.jsonl", 1
    while os.path.lexists(path):
        i += 1
        path = f"{base}-{i}.jsonl"
    return path


def _lines(lines) -> None:
    # Paths that are not UTF-8 are printed as their own bytes, as `ls` does.
    with stdout() as out:
        for line in lines:
            out.write(line + "\n")


def _error(exc: Exception) -> int:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc)
    print_error(f"error: {text}")
    return _ERROR


_DONE = {"move": "moved", "hardlink": "replaced by hard links", "symlink": "replaced by symbolic "
         "links", "delete": "moved to the backup folder", "trash": "moved to the trash"}


def run_apply(args: argparse.Namespace) -> int:
    """``dupfinder apply``: plan from the report, then list (or with --yes, do) the steps."""
    try:
        plan = plan_actions(
            read_csv(args.report), action=args.action, to=args.to, root=args.root,
            protect=args.protect, reference=args.reference, algorithm=args.algorithm,
            compat=args.compat, orient=args.orient,
        )
        # Named in a dry run too (nothing is created): the backup folder beside it
        # decides which files can be backed up by a rename.
        journal = args.journal or default_journal_path(args.report)
        result = apply_plan(plan, journal_path=journal, dry_run=not args.yes,
                            trash_dir=args.trash_dir)
    except (DupfinderError, OSError) as exc:
        return _error(exc)
    _lines(describe(s, dry_run=result.dry_run) for s in result.done)
    for s in result.skipped:
        print_error(f"skipped {s.path}: {s.reason}")
    for s in result.failed:
        print_error(f"failed, left as it was: {s.path}: {s.reason}")
    count = f"{len(result.done)} files ({human_size(result.bytes)})"
    if result.dry_run:
        print_error(f"dry run: {count} would be {_DONE[args.action]}, {len(result.skipped)} skipped; "
             "nothing changed. Run again with --yes to act.")
    else:
        print_error(f"{count} {_DONE[args.action]}, {len(result.skipped)} skipped, "
             f"{len(result.failed)} failed. Journal: {result.journal}")
        print_error(f"undo with: dupfinder undo --yes {result.journal}")
        if args.action in ("delete", "hardlink", "symlink") and result.done:
            print_error(f"the originals stay in the backup folder until: dupfinder purge --yes {result.journal}")
    return _ERROR if result.failed else _OK


def run_undo(args: argparse.Namespace) -> int:
    """``dupfinder undo``: list (or with --yes, restore) the files a journal records."""
    try:
        result = undo(args.journal, dry_run=not args.yes)
    except (DupfinderError, OSError) as exc:
        return _error(exc)
    verb = "would restore" if result.dry_run else "restored"
    _lines(f"{verb} {p}" for p in result.restored)
    for problem in result.problems:
        print_error(f"cannot restore {problem.path}: {problem.message}")
    tail = "; run again with --yes to restore" if result.dry_run else ""
    print_error(f"{len(result.restored)} files {verb}, {len(result.problems)} problems{tail}")
    return _OK if result.ok else _ERROR


def run_purge(args: argparse.Namespace) -> int:
    """``dupfinder purge``: list (or with --yes, delete) the backups a journal keeps."""
    try:
        result = purge(args.journal, dry_run=not args.yes)
    except (DupfinderError, OSError) as exc:
        return _error(exc)
    verb = "would delete" if result.dry_run else "deleted"
    _lines(f"{verb} {p}" for p in result.purged)
    for problem in result.problems:
        print_error(f"kept {problem.path}: {problem.message}")
    tail = "; run again with --yes to delete them" if result.dry_run else ""
    print_error(f"{len(result.purged)} backups {verb} ({human_size(result.freed_bytes)}){tail}")
    return _ERROR if result.problems else _OK
