"""The ``dupfinder`` command: a thin layer of argparse, progress bars and exit codes.

Everything here turns command-line words into a library call and the result
into text; the work itself is in :mod:`dupfinder.scan` and friends. Each
group of sub-commands lives in a ``cli_*`` module with a ``register``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence

from . import __version__
from .cli_common import (
    ExitStatus,
    ProgressBars,
    add_cache_options,
    add_hash_options,
    add_report_options,
    add_run_options,
    add_walk_options,
    expand_output,
    given,
    log_to_file,
    open_cache,
    plural,
    print_error,
    print_unreadable,
    require_paths,
    stdout,
)
from .fingerprint import HashSpec, fingerprint_file
from .models import DupfinderError, ScanError, ScanResult, UsageError
from .report import atomic_writer, render_errors_csv, write_report
from .scan import INDEX_METHODS, check_hash_size, scan

__all__ = ["ExitStatus", "main", "build_parser"]

log = logging.getLogger("dupfinder")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so clean-up runs as for Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated


def _forget_unhandled_interrupt() -> None:
    """Clear CPython's note that a KeyboardInterrupt went unhandled, once we have handled it.

    Code run through ``PyRun_String`` (some extension modules' loaders do)
    sets that note when Ctrl-C lands inside it, even if the exception is then
    caught; at the exit of ``python -m dupfinder`` CPython then kills itself
    with SIGINT instead of exiting with our status (about 1 Ctrl-C in 5 in the
    first half second here; the ``dupfinder`` script exits through another
    path). Each such run first clears the note, so an empty one does.
    """
    try:
        import ctypes

        ctypes.pythonapi.PyRun_SimpleString(b"")
    except (ImportError, AttributeError, OSError):  # not CPython, or no ctypes: nothing to clear
        pass


def add_threshold_options(p: argparse.ArgumentParser) -> None:
    """--threshold and --no-transforms, shared by scan and match."""
    p.add_argument(
        "--threshold", "-t", type=int, default=None, metavar="BITS",
        help="largest Hamming distance in bits between near-duplicates (default: 5 per 64 "
        "bits, so 5 for the default pHash and 20 for 256-bit hashes; 31 for pdq)",
    )
    p.add_argument(
        "--no-transforms", dest="transforms", action="store_false",
        help="match only copies in the same orientation (default: also mirrored, flipped "
        "and quarter-turned copies, named in the transform column)",
    )


def add_partial_option(p: argparse.ArgumentParser) -> None:
    """--partial, shared by scan and match."""
    p.add_argument(
        "--partial", action="store_true",
        help="also find partial copies: a crop at any offset (down to ~60%% of the picture), a square "
        "cut, the picture inside a screenshot, a page or a collage, also mirrored; the transform "
        "column says crop or contained and the JSON report gives the box. Slower; needs "
        "pip install 'dupfinder[partial]'",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command; each option has a help text."""
    parser = argparse.ArgumentParser(
        prog="dupfinder",
        description="Find duplicate and near-duplicate images, and copies of protected ones.",
        epilog="Exit status: 0 nothing found, 1 duplicates (or copies) found, 2 error, "
        "75 cache busy, 130 interrupted, 143 terminated.",
    )
    parser.add_argument("--version", action="version", version=f"dupfinder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("scan", help="find groups of near-duplicate images under folders")
    s.add_argument("paths", nargs="+", metavar="PATH", help="folders or files to scan")
    add_threshold_options(s)
    add_hash_options(s)
    add_walk_options(s)
    s.add_argument(
        "--index", choices=INDEX_METHODS, default="auto",
        help="pair search method; all give the same pairs (default: auto)",
    )
    add_partial_option(s)
    add_report_options(s)
    s.add_argument(
        "--keep", default="default", metavar="RULE",
        help="file each group keeps: default (most pixels, then largest file), largest, "
        "oldest, newest, shortest-path, or prefer:GLOB",
    )
    add_cache_options(s, no_cache=True)
    s.add_argument(
        "--new-since", metavar="WHEN", default=None,
        help="report only groups that gained a file since WHEN: 'last' (the start of the last "
        "completed scan of the same folders) or a date/time such as 2026-11-25 or 2026-11-25T22:00",
    )
    add_run_options(s)
    s.set_defaults(handler=_run_scan)

    h = sub.add_parser("hash", help="print the perceptual hash of each file, like sha256sum")
    h.add_argument("files", nargs="+", metavar="FILE", help="image files to hash")
    add_hash_options(h)
    h.set_defaults(handler=_run_hash)

    from . import cli_cache, cli_match

    cli_match.register(sub)
    cli_cache.register(sub)
    try:
        from . import cli_actions
    except ImportError:  # pragma: no cover - the actions module is optional while it is written
        cli_actions = None
    if cli_actions is not None:
        cli_actions.register(sub)
    return parser


def _run_hash(args) -> int:
    spec = HashSpec(
        algorithm=args.algorithm, hash_size=args.hash_size, compat=args.compat, orient=args.orient
    )
    check_hash_size(args.hash_size)
    failed = 0
    with stdout() as out:
        for path in args.files:
            result = fingerprint_file(path, spec)
            if isinstance(result, ScanError):
                failed += 1
                print_error(f"{result.path}: {result.message}")
            else:
                out.write(f"{result.hash}  {path}\n")
    return ExitStatus.ERROR if failed else ExitStatus.NO_DUPLICATES


def _summary(result: ScanResult, args) -> str:
    c = result.counts
    listed = " (listed above; --errors FILE saves them)" if result.errors and args.format == "csv" and not args.errors else ""
    blank = f", {c['low_information']} blank or flat (grouped only with identical copies)" if c.get("low_information") else ""
    # A folder that cannot be listed is an error but not one of the files found.
    unlisted = sum(1 for e in result.errors if e.stage == "walk")
    not_listed = f", {unlisted} not listed (folders or links that cannot be read)" if unlisted else ""
    text = (
        f"{plural(c.get('found', 0), 'file')} ({c.get('cached', 0)} answered by the cache): "
        f"{plural(c.get('hashed', 0), 'image')} hashed{blank}, {c.get('errors', 0) - unlisted} unreadable"
        f"{not_listed}{listed}; "
        f"{plural(c.get('groups', 0), 'group')}, {plural(c.get('duplicates', 0), 'duplicate')}"
    )
    return f"{text} in {result.elapsed:.1f}s"


def _parse_when(text: str) -> float | str:
    if text == "last":
        return "last"
    from datetime import datetime

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        msg = f"--new-since takes 'last' or a date such as 2026-11-25 or 2026-11-25T22:00, not {text!r}"
        raise UsageError(msg) from None
    return when.timestamp()  # a time without zone is local time, as people mean it


def _run_scan(args) -> int:
    new_since = _parse_when(args.new_since) if args.new_since else None
    if args.no_cache and new_since is not None:
        raise UsageError("--new-since needs the cache; drop --no-cache")
    require_paths(args.paths)
    output = expand_output(args.output)
    errors_file = expand_output(args.errors)
    bars = ProgressBars.for_args(args)
    cache = None if args.no_cache else open_cache(args, lock=True)
    try:
        result = scan(
            args.paths,
            threshold=args.threshold,
            algorithm=args.algorithm,
            hash_size=args.hash_size,
            compat=args.compat,
            orient=args.orient,
            transforms=args.transforms,
            include=args.include,
            exclude=args.exclude,
            follow_symlinks=args.follow_symlinks,
            index=args.index,
            keep=args.keep,
            new_since=new_since,
            cache=cache,
            workers=args.workers,
            progress=bars,
            partial=args.partial,
        )
    finally:
        bars.close()
        if cache is not None:
            cache.close()
    write_report(result, format=args.format, output=output)
    if errors_file:
        with atomic_writer(errors_file) as f:
            render_errors_csv(result, f)
    if args.log_file:
        for e in result.errors:
            log_to_file(f"unreadable: {e.path}: {e.stage}: {e.message}")
    print_unreadable(result.errors, args, errors_file)
    if not args.quiet:
        print_error(_summary(result, args))
    return ExitStatus.DUPLICATES_FOUND if result.has_duplicates else ExitStatus.NO_DUPLICATES


def _setup_logging(args) -> None:
    level = logging.WARNING
    if getattr(args, "verbose", False):
        level = logging.DEBUG
    elif getattr(args, "quiet", False):
        level = logging.ERROR
    # -v is dupfinder's own debug lines, not Pillow's (its PNG chunks) or any other library's.
    logging.basicConfig(level=max(level, logging.WARNING), format="dupfinder: %(message)s", stream=sys.stderr,
                        force=True)
    logging.getLogger("dupfinder").setLevel(logging.DEBUG if level == logging.DEBUG else logging.NOTSET)
    run_log = logging.getLogger("dupfinder.run")
    run_log.propagate = False
    run_log.handlers.clear()
    log_file = getattr(args, "log_file", None)
    if log_file:
        # Its folder is made, as for --output: cron's first night finds no folder.
        args.log_file = log_file = expand_output(log_file)
        handler = logging.FileHandler(log_file, encoding="utf-8", errors="backslashreplace")
        handler.setFormatter(logging.Formatter("%(asctime)s dupfinder: %(message)s"))
        handler.setLevel(logging.WARNING)
        root = logging.getLogger()
        root.setLevel(min(root.level, logging.WARNING))
        root.handlers[0].setLevel(level)
        root.addHandler(handler)
        run_log.addHandler(handler)


def _check_options(args) -> None:
    # Options that contradict each other: say so rather than let one win.
    if getattr(args, "no_cache", False) and getattr(args, "cache", None):
        raise UsageError("--cache and --no-cache contradict each other")
    if getattr(args, "algorithm", None) == "pdq" and given(args, "hash_size") and args.hash_size != 16:
        raise UsageError("--hash-size does not apply to pdq: its hashes are always 256 bits")


def _handle(args) -> int:
    # A cache damaged inside (the open found its header and schema fine)
    # fails at the first query that reads the damage: moved aside and the
    # command run once more on a new cache, as a damaged header is, so a
    # nightly job does not fail every night.
    try:
        return args.handler(args)
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) or getattr(args, "no_cache", False) or not hasattr(args, "cache"):
            raise
        from .cache import default_cache_path, move_aside

        path = args.cache or default_cache_path()
        aside = move_aside(path, f"damaged ({exc})")
        print_error(f"warning: the cache {path} is damaged ({exc}); moved it to {aside} and starting again")
        return args.handler(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status (see :class:`ExitStatus`).

    >>> main(["scan", "--threshold", "-1", "--no-cache", "photos"])
    2
    """
    try:
        args = build_parser().parse_args(argv)  # imports the subcommands: Ctrl-C may land here
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    except KeyboardInterrupt:
        _forget_unhandled_interrupt()
        print_error("interrupted")
        return int(ExitStatus.INTERRUPTED)
    try:
        _setup_logging(args)
    except OSError as exc:
        print_error(f"error: --log-file {args.log_file}: {exc.strerror or exc}")
        return int(ExitStatus.ERROR)
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    from .cache import CacheBusyError

    def fail(message: str, code: ExitStatus) -> int:
        print_error(message)
        if getattr(args, "log_file", None):
            log_to_file(message)
        return int(code)

    try:
        _check_options(args)
        return int(_handle(args))
    except _Terminated:
        _forget_unhandled_interrupt()  # a KeyboardInterrupt too
        return fail("terminated; the work done so far is cached", ExitStatus.TERMINATED)
    except KeyboardInterrupt:
        _forget_unhandled_interrupt()
        return fail("interrupted; the work done so far is cached", ExitStatus.INTERRUPTED)
    except CacheBusyError as exc:
        return fail(f"busy: {exc}", ExitStatus.BUSY)
    except BrokenPipeError:
        # `dupfinder scan ... | head`: the reader has what it wanted. Quiet, as
        # other tools are, and stdout pointed away so that Python's last
        # flush at exit does not complain either.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return int(ExitStatus.BROKEN_PIPE)
    except (DupfinderError, OSError) as exc:
        return fail(f"error: {exc}", ExitStatus.ERROR)
    except sqlite3.Error as exc:  # the cache could be opened but not written (a read-only file or disk)
        return fail(f"error: the cache: {exc} (--no-cache, or --cache another file)", ExitStatus.ERROR)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
