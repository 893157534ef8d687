"""The ``dupfinder`` command: a thin layer of argparse, progress bars and exit codes.

Everything here turns command-line words into a library call and the result
into text; the work itself is in :mod:`dupfinder.scan` and friends.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import signal
import sys
from collections.abc import Sequence
from enum import IntEnum

from . import __version__, hashes
from .fingerprint import COMPAT_MODES, HashSpec, fingerprint_file
from .models import DupfinderError, Progress, ScanError, ScanResult
from .report import FORMATS, atomic_writer, render_errors_csv, write_report
from .scan import INDEX_METHODS, scan

__all__ = ["ExitStatus", "main", "build_parser"]

log = logging.getLogger("dupfinder")


class ExitStatus(IntEnum):
    """Exit codes of ``dupfinder``, for scripts and cron jobs to branch on.

    Like ``diff``: 0 when nothing was found, 1 when something was, 2 when
    the command could not do its job. Unreadable images do not change the
    code; they are counted and listed.

    >>> int(ExitStatus.DUPLICATES_FOUND)
    1
    """

    NO_DUPLICATES = 0
    DUPLICATES_FOUND = 1
    ERROR = 2
    INTERRUPTED = 130
    TERMINATED = 143


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so clean-up runs as for Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated


class _ProgressBars:
    """Draws the core's Progress records as tqdm bars on stderr."""

    LABELS = {"walk": "finding files", "hash": "hashing", "group": "grouping"}

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.stage = None

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        if p.stage != self.stage:
            self.close()
            from tqdm import tqdm

            self.stage = p.stage
            self.bar = tqdm(
                total=p.total,
                desc=self.LABELS.get(p.stage, p.stage),
                unit=" files" if p.stage != "group" else "",
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )
        if p.total is not None and self.bar.total != p.total:
            self.bar.total = p.total
        self.bar.n = p.done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.stage = None


def _add_hash_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--algorithm", "-a", choices=hashes.ALGORITHMS, default="phash",
        help="perceptual hash to compare (default: phash)",
    )
    p.add_argument(
        "--hash-size", type=int, default=8, metavar="N",
        help="hash grid edge: 8 gives 64-bit hashes, 16 gives 256-bit (default: 8)",
    )
    p.add_argument(
        "--compat", choices=COMPAT_MODES, default=None,
        help="hash files exactly as ImageHash does from Image.open(path): no EXIF "
        "orientation, no reduced decoding, so hashes mix with stored ImageHash ones",
    )
    p.add_argument(
        "--no-orient", dest="orient", action="store_false",
        help="ignore the EXIF orientation tag (default: apply it, as viewers do)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command; each option has a help text."""
    parser = argparse.ArgumentParser(
        prog="dupfinder",
        description="Find duplicate and near-duplicate images.",
        epilog="Exit status: 0 no duplicates, 1 duplicates found, 2 error, 130 interrupted, "
        "143 terminated.",
    )
    parser.add_argument("--version", action="version", version=f"dupfinder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("scan", help="find groups of near-duplicate images under folders")
    s.add_argument("paths", nargs="+", metavar="PATH", help="folders or files to scan")
    s.add_argument(
        "--threshold", "-t", type=int, default=5, metavar="BITS",
        help="largest Hamming distance in bits between near-duplicates (default: 5)",
    )
    _add_hash_options(s)
    s.add_argument(
        "--include", action="append", default=[], metavar="GLOB",
        help="only take image files whose path or name matches GLOB (repeatable)",
    )
    s.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB",
        help="skip files and folders whose path or name matches GLOB (repeatable)",
    )
    s.add_argument(
        "--follow-symlinks", action="store_true",
        help="follow symbolic links (each folder is visited once, so loops end)",
    )
    s.add_argument(
        "--workers", "-j", type=int, default=None, metavar="N",
        help="worker processes (default: one per CPU; 0: hash in this process)",
    )
    s.add_argument(
        "--index", choices=INDEX_METHODS, default="auto",
        help="pair search method; all give the same pairs (default: auto)",
    )
    s.add_argument(
        "--format", "-f", choices=FORMATS, default="csv",
        help="report format (default: csv)",
    )
    s.add_argument(
        "--output", "-o", metavar="FILE", default=None,
        help="write the report to FILE, atomically (default: standard output)",
    )
    s.add_argument(
        "--errors", metavar="FILE", default=None,
        help="write the files that could not be read to FILE as CSV (path,stage,message)",
    )
    s.add_argument("--quiet", "-q", action="store_true", help="print nothing but fatal errors")
    s.add_argument("--verbose", "-v", action="store_true", help="log what is being done")
    s.add_argument(
        "--progress", choices=("auto", "always", "never"), default="auto",
        help="progress bar on stderr: auto shows it only on a terminal (default: auto)",
    )

    h = sub.add_parser("hash", help="print the perceptual hash of each file, like sha256sum")
    h.add_argument("files", nargs="+", metavar="FILE", help="image files to hash")
    _add_hash_options(h)
    return parser


def _stdout() -> io.TextIOBase:
    if hasattr(sys.stdout, "buffer"):
        sys.stdout.flush()
        return io.TextIOWrapper(
            sys.stdout.buffer, encoding="utf-8", errors="surrogateescape", write_through=True
        )
    return sys.stdout


def _print_error(message: str) -> None:
    text = message.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    print(f"dupfinder: {text}", file=sys.stderr)


def _run_hash(args) -> int:
    spec = HashSpec(
        algorithm=args.algorithm, hash_size=args.hash_size, compat=args.compat, orient=args.orient
    )
    if args.hash_size < 8 or args.hash_size % 8:
        _print_error(f"error: --hash-size must be a multiple of 8, not {args.hash_size}")
        return ExitStatus.ERROR
    out = _stdout()
    failed = 0
    for path in args.files:
        result = fingerprint_file(path, spec)
        if isinstance(result, ScanError):
            failed += 1
            _print_error(f"{result.path}: {result.message}")
        else:
            out.write(f"{result.hash}  {path}\n")
    out.flush()
    if out is not sys.stdout:
        out.detach()
    return ExitStatus.ERROR if failed else ExitStatus.NO_DUPLICATES


def _summary(result: ScanResult, args) -> str:
    c = result.counts
    text = (
        f"{c.get('hashed', 0)} images hashed, {c.get('groups', 0)} groups, "
        f"{c.get('duplicates', 0)} duplicates, {c.get('errors', 0)} unreadable"
    )
    if result.errors and args.format == "csv" and not args.errors:
        text += " (listed above; --errors FILE saves them)"
    return f"{text} in {result.elapsed:.1f}s"


def _run_scan(args) -> int:
    show_bar = args.progress == "always" or (
        args.progress == "auto" and not args.quiet and sys.stderr.isatty()
    )
    bars = _ProgressBars(show_bar)
    try:
        result = scan(
            args.paths,
            threshold=args.threshold,
            algorithm=args.algorithm,
            hash_size=args.hash_size,
            compat=args.compat,
            orient=args.orient,
            include=args.include,
            exclude=args.exclude,
            follow_symlinks=args.follow_symlinks,
            index=args.index,
            workers=args.workers,
            progress=bars,
        )
    finally:
        bars.close()
    write_report(result, format=args.format, output=args.output)
    if args.errors:
        with atomic_writer(args.errors) as f:
            render_errors_csv(result, f)
    if not args.quiet:
        if args.format == "csv" and not args.errors:
            for e in result.errors:
                _print_error(f"{e.path}: {e.stage}: {e.message}")
        _print_error(_summary(result, args))
    return ExitStatus.DUPLICATES_FOUND if result.has_duplicates else ExitStatus.NO_DUPLICATES


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status (see :class:`ExitStatus`).

    >>> main(["scan", "--threshold", "-1", "photos"])
    2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    level = logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    logging.basicConfig(level=level, format="dupfinder: %(message)s", stream=sys.stderr)
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        if args.command == "hash":
            return int(_run_hash(args))
        return int(_run_scan(args))
    except _Terminated:
        _print_error("terminated")
        return int(ExitStatus.TERMINATED)
    except KeyboardInterrupt:
        _print_error("interrupted")
        return int(ExitStatus.INTERRUPTED)
    except (DupfinderError, OSError) as exc:
        _print_error(f"error: {exc}")
        return int(ExitStatus.ERROR)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
