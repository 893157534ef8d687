"""The ``dupfinder`` command: a thin layer of argparse, progress bars and exit codes.

Everything here turns command-line words into a library call and the result
into text; the work itself is in :mod:`dupfinder.scan` and friends.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import signal
import sys
from collections.abc import Sequence
from enum import IntEnum

from . import __version__
from .fingerprint import ALGORITHMS, COMPAT_MODES, HashSpec, fingerprint_file
from .models import DupfinderError, Progress, ScanError, ScanResult, UsageError
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
    BUSY = 75  # EX_TEMPFAIL: another dupfinder holds the cache; try later
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
        "--algorithm", "-a", choices=ALGORITHMS, default="phash",
        help="perceptual hash to compare (default: phash; pdq is Facebook's 256-bit PDQ)",
    )
    p.add_argument(
        "--hash-size", type=int, default=8, metavar="N",
        help="hash grid edge: 8 gives 64-bit hashes, 16 gives 256-bit (default: 8; pdq is always 256-bit)",
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
        epilog="Exit status: 0 no duplicates, 1 duplicates found, 2 error, 75 cache busy, "
        "130 interrupted, 143 terminated.",
    )
    parser.add_argument("--version", action="version", version=f"dupfinder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("scan", help="find groups of near-duplicate images under folders")
    s.add_argument("paths", nargs="+", metavar="PATH", help="folders or files to scan")
    s.add_argument(
        "--threshold", "-t", type=int, default=None, metavar="BITS",
        help="largest Hamming distance in bits between near-duplicates (default: 5 per 64 "
        "bits, so 5 for the default pHash and 20 for 256-bit hashes; 31 for pdq)",
    )
    s.add_argument(
        "--no-transforms", dest="transforms", action="store_false",
        help="match only copies in the same orientation (default: also mirrored, flipped "
        "and quarter-turned copies, named in the transform column)",
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
        help="write the report to FILE, atomically (default: standard output); strftime "
        "patterns such as reports/dups-%%Y-%%m-%%d.csv are filled in with the date",
    )
    s.add_argument(
        "--errors", metavar="FILE", default=None,
        help="write the files that could not be read to FILE as CSV (path,stage,message)",
    )
    s.add_argument(
        "--keep", default="default", metavar="RULE",
        help="file each group keeps: default (most pixels, then largest file), largest, "
        "oldest, newest, shortest-path, or prefer:GLOB",
    )
    _add_cache_option(s)
    s.add_argument(
        "--no-cache", action="store_true",
        help="neither read nor write the hash cache (--new-since and the ignore list need it)",
    )
    s.add_argument(
        "--new-since", metavar="WHEN", default=None,
        help="report only groups that gained a file since WHEN: 'last' (the start of the last "
        "completed scan of the same folders) or a date/time such as 2026-11-25 or 2026-11-25T22:00",
    )
    s.add_argument(
        "--log-file", metavar="FILE", default=None,
        help="also append warnings and errors, with the time, to FILE",
    )
    s.add_argument("--quiet", "-q", action="store_true", help="print nothing on success; fatal errors still go to stderr")
    s.add_argument("--verbose", "-v", action="store_true", help="log what is being done")
    s.add_argument(
        "--progress", choices=("auto", "always", "never"), default="auto",
        help="progress bar on stderr: auto shows it only on a terminal (default: auto)",
    )

    h = sub.add_parser("hash", help="print the perceptual hash of each file, like sha256sum")
    h.add_argument("files", nargs="+", metavar="FILE", help="image files to hash")
    _add_hash_options(h)

    c = sub.add_parser("cache", help="look after the hash cache")
    csub = c.add_subparsers(dest="cache_command", metavar="ACTION")
    csub.required = True
    _add_cache_option(csub.add_parser("info", help="entries, size and location of the cache"))
    _add_cache_option(csub.add_parser("prune", help="drop entries of files that no longer exist"))

    i = sub.add_parser("ignore", help="record pairs of files that are not duplicates")
    isub = i.add_subparsers(dest="ignore_command", metavar="ACTION")
    isub.required = True
    ia = isub.add_parser("add", help="never group these files with each other again")
    ia.add_argument("files", nargs="+", metavar="FILE", help="two or more files (every pair is ignored)")
    ia.add_argument("--reason", default="", help="a note kept with the entry")
    _add_cache_option(ia)
    ii = isub.add_parser("import", help="ignore what a reviewed CSV report says is not a duplicate")
    ii.add_argument("report", metavar="REPORT", help="a CSV report from dupfinder scan, with a verdict column")
    ii.add_argument(
        "--column", default="verdict",
        help="the column holding the verdict (default: verdict); a row whose verdict is "
        "'not duplicate', 'different', 'keep both' or 'ignore' is not a duplicate of the rest of its group",
    )
    _add_cache_option(ii)
    il = isub.add_parser("list", help="show the ignore list with its ids")
    _add_cache_option(il)
    ir = isub.add_parser("remove", help="take entries off the ignore list")
    ir.add_argument("ids", nargs="+", type=int, metavar="ID", help="ids shown by 'ignore list'")
    _add_cache_option(ir)

    try:
        from .cli_actions import register
    except ImportError:  # pragma: no cover - the actions module is optional while it is written
        register = None
    if register is not None:
        register(sub)
    return parser


def _add_cache_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache", metavar="PATH", default=None,
        help="hash cache file (default: $XDG_CACHE_HOME/dupfinder/cache.sqlite, "
        "else ~/.cache/dupfinder/cache.sqlite)",
    )


@contextlib.contextmanager
def _stdout():
    """Standard output that writes file names' undecodable bytes back as bytes."""
    if not hasattr(sys.stdout, "buffer"):
        yield sys.stdout
        return
    sys.stdout.flush()
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", errors="surrogateescape", write_through=True)
    try:
        yield out
        out.flush()
    finally:
        out.detach()  # closing the wrapper must not close sys.stdout


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
    failed = 0
    with _stdout() as out:
        for path in args.files:
            result = fingerprint_file(path, spec)
            if isinstance(result, ScanError):
                failed += 1
                _print_error(f"{result.path}: {result.message}")
            else:
                out.write(f"{result.hash}  {path}\n")
    return ExitStatus.ERROR if failed else ExitStatus.NO_DUPLICATES


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _summary(result: ScanResult, args) -> str:
    c = result.counts
    text = (
        f"{_plural(c.get('hashed', 0), 'image')} hashed ({c.get('cached', 0)} from the cache), "
        f"{_plural(c.get('groups', 0), 'group')}, {_plural(c.get('duplicates', 0), 'duplicate')}, "
        f"{c.get('errors', 0)} unreadable"
    )
    if result.errors and args.format == "csv" and not args.errors:
        text += " (listed above; --errors FILE saves them)"
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


def _expand_output(path: str | None) -> str | None:
    if path is None or "%" not in path:
        return path
    import time

    return time.strftime(path)


def _open_cache(args, *, lock: bool = False):
    from .cache import Cache, default_cache_path

    return Cache(args.cache or default_cache_path(), lock=lock)


def _run_scan(args) -> int:
    show_bar = args.progress == "always" or (
        args.progress == "auto" and not args.quiet and sys.stderr.isatty()
    )
    new_since = _parse_when(args.new_since) if args.new_since else None
    if args.no_cache and new_since is not None:
        raise UsageError("--new-since needs the cache; drop --no-cache")
    output = _expand_output(args.output)
    errors_file = _expand_output(args.errors)
    bars = _ProgressBars(show_bar)
    cache = None if args.no_cache else _open_cache(args, lock=True)
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
        )
    finally:
        bars.close()
        if cache is not None:
            cache.close()
    if output:
        parent = os.path.dirname(os.path.abspath(output))
        os.makedirs(parent, exist_ok=True)
    write_report(result, format=args.format, output=output)
    if errors_file:
        with atomic_writer(errors_file) as f:
            render_errors_csv(result, f)
    for e in result.errors:
        log.debug("%s: %s: %s", e.path, e.stage, e.message)
        if args.log_file:
            _to_log_file(f"unreadable: {e.path}: {e.stage}: {e.message}")
    if not args.quiet:
        if args.format == "csv" and not errors_file:
            for e in result.errors:
                _print_error(f"{e.path}: {e.stage}: {e.message}")
        _print_error(_summary(result, args))
    return ExitStatus.DUPLICATES_FOUND if result.has_duplicates else ExitStatus.NO_DUPLICATES


def _to_log_file(message: str) -> None:
    logging.getLogger("dupfinder.run").warning(message)


def _run_cache(args) -> int:
    with _open_cache(args) as cache:
        if args.cache_command == "info":
            info = cache.info()
            with _stdout() as out:
                out.write(
                    f"location: {info.path}\nfiles: {info.files}\nresults: {info.results}\n"
                    f"scans: {info.scans}\nignored pairs: {info.ignored}\nsize: {info.bytes} bytes\n"
                )
        else:
            n = cache.prune()
            _print_error(f"pruned {_plural(n, 'entry') if n == 1 else f'{n} entries'} of files that no longer exist")
    return ExitStatus.NO_DUPLICATES


_NOT_DUPLICATE = {"not duplicate", "not a duplicate", "different", "keep both", "ignore", "not duplicates"}


def _digest_for(cache, path: str) -> bytes | None:
    from .fingerprint import file_digest

    try:
        st = os.stat(path)
    except OSError:
        return None
    known = cache.file_digest(os.path.abspath(path), size=st.st_size, mtime_ns=st.st_mtime_ns)
    if known is not None:
        return known
    digest = file_digest(path)
    return None if isinstance(digest, ScanError) else digest


def _run_ignore(args) -> int:
    from itertools import combinations

    from .report import read_csv

    with _open_cache(args) as cache:
        if args.ignore_command == "list":
            with _stdout() as out:
                for i, a, b, reason, _ in cache.list_ignored():
                    out.write(f"{i}\t{a}\t{b}\t{reason}\n")
            return ExitStatus.NO_DUPLICATES
        if args.ignore_command == "remove":
            n = cache.unignore(args.ids)
            _print_error(f"removed {n} of {len(args.ids)}")
            return ExitStatus.NO_DUPLICATES if n == len(args.ids) else ExitStatus.ERROR
        if args.ignore_command == "add":
            pairs = list(combinations(args.files, 2))
            reason = args.reason
        else:
            rows = read_csv(args.report)
            if rows and args.column not in rows[0]:
                raise UsageError(f"{args.report}: no {args.column!r} column")
            groups: dict[str, list[dict]] = {}
            for r in rows:
                groups.setdefault(r["group"], []).append(r)
            pairs = []
            for members in groups.values():
                for r in members:
                    verdict = " ".join(r.get(args.column, "").lower().replace("-", " ").replace("_", " ").split())
                    if verdict in _NOT_DUPLICATE:
                        pairs.extend((r["path"], o["path"]) for o in members if o is not r)
            reason = f"from {os.path.basename(args.report)}"
        digests: dict[str, bytes | None] = {}
        added = 0
        missing = set()
        for a, b in pairs:
            for p in (a, b):
                if p not in digests:
                    digests[p] = _digest_for(cache, p)
                    if digests[p] is None:
                        missing.add(p)
            if digests[a] and digests[b]:
                added += cache.ignore(digests[a], digests[b], a_path=a, b_path=b, reason=reason)
        cache.commit()
        for p in sorted(missing):
            _print_error(f"{p}: cannot be read, not ignored")
        _print_error(f"{_plural(added, 'pair')} added to the ignore list")
        return ExitStatus.ERROR if missing else ExitStatus.NO_DUPLICATES


def _setup_logging(args) -> None:
    level = logging.WARNING
    if getattr(args, "verbose", False):
        level = logging.DEBUG
    elif getattr(args, "quiet", False):
        level = logging.ERROR
    logging.basicConfig(level=level, format="dupfinder: %(message)s", stream=sys.stderr, force=True)
    run_log = logging.getLogger("dupfinder.run")
    run_log.propagate = False
    run_log.handlers.clear()
    log_file = getattr(args, "log_file", None)
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8", errors="backslashreplace")
        handler.setFormatter(logging.Formatter("%(asctime)s dupfinder: %(message)s"))
        handler.setLevel(logging.WARNING)
        root = logging.getLogger()
        root.setLevel(min(root.level, logging.WARNING))
        root.handlers[0].setLevel(level)
        root.addHandler(handler)
        run_log.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status (see :class:`ExitStatus`).

    >>> main(["scan", "--threshold", "-1", "--no-cache", "photos"])
    2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    _setup_logging(args)
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    from .cache import CacheBusyError

    def fail(message: str, code: ExitStatus) -> int:
        _print_error(message)
        if getattr(args, "log_file", None):
            _to_log_file(message)
        return int(code)

    try:
        if args.command == "hash":
            return int(_run_hash(args))
        if args.command == "cache":
            return int(_run_cache(args))
        if args.command == "ignore":
            return int(_run_ignore(args))
        if args.command == "scan":
            return int(_run_scan(args))
        return int(args.handler(args))
    except _Terminated:
        return fail("terminated; the work done so far is cached", ExitStatus.TERMINATED)
    except KeyboardInterrupt:
        return fail("interrupted; the work done so far is cached", ExitStatus.INTERRUPTED)
    except CacheBusyError as exc:
        return fail(f"busy: {exc}", ExitStatus.BUSY)
    except (DupfinderError, OSError) as exc:
        return fail(f"error: {exc}", ExitStatus.ERROR)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
