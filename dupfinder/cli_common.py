"""What every sub-command of the ``dupfinder`` command shares: options, output, exit codes."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Sequence
from enum import IntEnum

from .fingerprint import ALGORITHMS, COMPAT_MODES
from .models import Progress, UsageError
from .report import FORMATS

__all__ = [
    "ExitStatus",
    "ProgressBars",
    "add_hash_options",
    "add_cache_options",
    "add_walk_options",
    "add_run_options",
    "add_report_options",
    "stdout",
    "print_error",
    "log_to_file",
    "open_cache",
    "expand_output",
    "plural",
]


class ExitStatus(IntEnum):
    """Exit codes of ``dupfinder``, for scripts and cron jobs to branch on.

    Like ``diff``: 0 when nothing was found, 1 when something was (groups
    for ``scan``, copies for ``match``), 2 when the command could not do its
    job. Unreadable images do not change the code; they are counted and listed.

    >>> int(ExitStatus.DUPLICATES_FOUND)
    1
    """

    NO_DUPLICATES = 0
    DUPLICATES_FOUND = 1
    ERROR = 2
    BUSY = 75  # EX_TEMPFAIL: another dupfinder holds the cache; try later
    INTERRUPTED = 130
    BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of the report went away (``| head``)
    TERMINATED = 143


class ProgressBars:
    """Draws the core's Progress records as tqdm bars on stderr (or nothing)."""

    LABELS = {"walk": "finding files", "copies": "looking for copies", "hash": "hashing",
              "features": "local features", "partial": "matching parts", "group": "grouping"}
    UNITS = {"group": "", "partial": " pairs"}

    def __init__(self, enabled: bool, *, verbose: bool = False):
        self.enabled = enabled
        self.bar = None
        self.stage = None
        # --verbose: each stage, with its count and time, as it ends.
        self.verbose = verbose
        self._last: Progress | None = None
        self._since = 0.0

    def _note(self, p: Progress | None) -> None:
        last = self._last
        if last is not None and (p is None or p.stage != last.stage):
            unit = self.UNITS.get(last.stage, " files")
            count = "" if not unit else f"{last.done}{'' if last.total is None else f' of {last.total}'}{unit} "
            logging.getLogger("dupfinder").debug("%s: %sin %.2f s", self.LABELS.get(last.stage, last.stage),
                                                 count, time.monotonic() - self._since)
        if p is not None and (last is None or p.stage != last.stage):
            self._since = time.monotonic()
        self._last = p

    def __call__(self, p: Progress) -> None:
        if self.verbose:
            self._note(p)
        if not self.enabled:
            return
        if p.stage != self.stage:
            self.close()
            from tqdm import tqdm

            self.stage = p.stage
            self.bar = tqdm(
                total=p.total,
                desc=self.LABELS.get(p.stage, p.stage),
                unit=self.UNITS.get(p.stage, " files"),
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )
        if p.total is not None and self.bar.total != p.total:
            self.bar.total = p.total
        self.bar.n = p.done
        self.bar.refresh()

    def close(self) -> None:
        if self.verbose:
            self._note(None)
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.stage = None

    @classmethod
    def for_args(cls, args) -> ProgressBars:
        """A bar when asked, or by default when stderr is a terminal and not --quiet."""
        enabled = args.progress == "always" or (
            args.progress == "auto" and not args.quiet and sys.stderr.isatty()
        )
        return cls(enabled, verbose=getattr(args, "verbose", False))


class _Given(argparse.Action):
    """Store the value and note that the user gave it (``args.given``): a default must not override what a file says."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def given(args, name: str) -> bool:
    """Whether the user gave option ``name`` (a dest) on the command line, rather than leaving its default.

    >>> p = argparse.ArgumentParser()
    >>> add_hash_options(p)
    >>> given(p.parse_args(["-a", "phash"]), "algorithm"), given(p.parse_args([]), "algorithm")
    (True, False)
    """
    return name in getattr(args, "given", ())


def _workers(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def add_hash_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--algorithm", "-a", choices=ALGORITHMS, default="phash", action=_Given,
        help="perceptual hash to compare (default: phash; pdq is Facebook's 256-bit PDQ)",
    )
    p.add_argument(
        "--hash-size", type=int, default=8, metavar="N", action=_Given,
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


def add_cache_options(p: argparse.ArgumentParser, *, no_cache: bool = False) -> None:
    p.add_argument(
        "--cache", metavar="PATH", default=None,
        help="hash cache file (default: $XDG_CACHE_HOME/dupfinder/cache.sqlite, "
        "else ~/.cache/dupfinder/cache.sqlite)",
    )
    if no_cache:
        p.add_argument(
            "--no-cache", action="store_true",
            help="neither read nor write the hash cache (--new-since and the ignore list need it)",
        )


def add_walk_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--include", action="append", default=[], metavar="GLOB",
        help="only take image files whose path or name matches GLOB (repeatable)",
    )
    p.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB",
        help="skip files and folders whose path or name matches GLOB (repeatable)",
    )
    p.add_argument(
        "--follow-symlinks", action="store_true",
        help="follow symbolic links (each folder is visited once, so loops end)",
    )


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers", "-j", type=_workers, default=None, metavar="N",
        help="worker processes (default: one per CPU; 0: hash in this process)",
    )
    p.add_argument(
        "--log-file", metavar="FILE", default=None,
        help="also append warnings and errors, with the time, to FILE",
    )
    loudness = p.add_mutually_exclusive_group()
    loudness.add_argument(
        "--quiet", "-q", action="store_true",
        help="print nothing on success; fatal errors still go to stderr",
    )
    loudness.add_argument("--verbose", "-v", action="store_true", help="log what is being done")
    p.add_argument(
        "--progress", choices=("auto", "always", "never"), default="auto",
        help="progress bar on stderr: auto shows it only on a terminal (default: auto)",
    )


def add_report_options(p: argparse.ArgumentParser, *, formats=FORMATS) -> None:
    p.add_argument(
        "--format", "-f", choices=formats, default="csv",
        help="report format (default: csv)",
    )
    p.add_argument(
        "--output", "-o", metavar="FILE", default=None,
        help="write the report to FILE, atomically (default: standard output); strftime "
        "patterns such as reports/dups-%%Y-%%m-%%d.csv are filled in with the date",
    )
    p.add_argument(
        "--errors", metavar="FILE", default=None,
        help="write the files that could not be read to FILE as CSV (path,stage,message)",
    )


@contextlib.contextmanager
def stdout():
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


def print_error(message: str) -> None:
    """One line on stderr, prefixed with the program's name.

    >>> import contextlib, io
    >>> buf = io.StringIO()
    >>> with contextlib.redirect_stderr(buf):
    ...     print_error("x.jpg: open: not an image")
    >>> buf.getvalue()
    'dupfinder: x.jpg: open: not an image\\n'
    """
    text = message.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    print(f"dupfinder: {text}", file=sys.stderr)


def log_to_file(message: str) -> None:
    """A line for --log-file only (its handler is set up by ``cli.main``)."""
    logging.getLogger("dupfinder.run").warning(message)


def open_cache(args, *, lock: bool = False):
    """The cache named by --cache, or the default one."""
    from .cache import Cache, default_cache_path

    return Cache(args.cache or default_cache_path(), lock=lock)


def expand_output(path: str | None) -> str | None:
    """Fill strftime patterns of an output path with today's date and make its folder; ``-`` is standard output (None).

    >>> expand_output(None), expand_output("plain.csv"), expand_output("-")
    (None, 'plain.csv', None)
    """
    if path is None or path == "-":
        return None
    if "%" in path:
        path = time.strftime(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return path


def require_paths(paths: Sequence[str]) -> None:
    """A UsageError (exit 2) for a path given on the command line that does not exist.

    A mistyped folder, or a backup drive that is not mounted tonight, must
    not pass for a tree without duplicates (exit 0).

    >>> require_paths(["."])
    >>> require_paths(["/no/such/folder"])
    Traceback (most recent call last):
    ...
    dupfinder.models.UsageError: no such file or folder: /no/such/folder
    """
    for path in paths:
        if not os.path.exists(path):  # a link to a drive that is gone too
            raise UsageError(f"no such file or folder: {path}")


def print_unreadable(errors: Sequence, args, errors_file: str | None) -> None:
    """List the files that could not be read on stderr, when no report or file holds them (a CSV report, no --errors).

    Even with --quiet: quiet silences progress and the summary, not the
    only record of a file that was not checked.

    >>> import contextlib, io, types
    >>> from dupfinder.models import ScanError
    >>> err = io.StringIO()
    >>> with contextlib.redirect_stderr(err):
    ...     print_unreadable([ScanError("a.jpg", "open", "gone")], types.SimpleNamespace(format="csv"), None)
    >>> err.getvalue().splitlines()
    ['dupfinder: a.jpg: open: gone']
    """
    if args.format == "csv" and not errors_file:
        for e in errors:
            print_error(f"{e.path}: {e.stage}: {e.message}")


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 group``, ``2 groups``.

    >>> plural(1, "group"), plural(3, "entry", "entries")
    ('1 group', '3 entries')
    """
    return f"{n} {word if n == 1 else (many or word + 's')}"
