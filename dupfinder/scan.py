"""The scan pipeline: walk, fingerprint in a worker pool, index, group.

``scan()`` is what ``dupfinder scan`` runs. It reports progress as
:class:`Progress` records through a callback and returns every failure as a
:class:`ScanError` in the result; it prints nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial

import numpy as np

from . import hashes
from .cache import CachedResult, spec_key
from .cluster import build_groups, is_low_information, keep_rule, only_new
from .executor import Executor, WorkerCrashed, make_executor
from .fingerprint import (
    ALGORITHMS,
    COMPAT_MODES,
    TRANSFORMS,
    Fingerprint,
    HashSpec,
    file_digest,
    fingerprint_and_digest,
)
from .models import (
    FileEntry,
    HashedFile,
    Progress,
    ScanError,
    ScanResult,
    ScanSettings,
    UsageError,
)
from .walk import walk

__all__ = ["scan", "fingerprint_entries", "ProgressCallback", "validate_settings", "default_threshold"]

ProgressCallback = Callable[[Progress], None]

INDEX_METHODS = ("auto", "mih", "bktree", "brute")


def _noop(_: Progress) -> None:
    pass


def validate_settings(settings: ScanSettings) -> None:
    """Raise UsageError for settings that cannot work, with a message that says why.

    >>> validate_settings(ScanSettings(roots=("x",), threshold=-1))
    Traceback (most recent call last):
    ...
    dupfinder.models.UsageError: threshold must be 0 or more bits, not -1
    """
    if settings.threshold < 0:
        msg = f"threshold must be 0 or more bits, not {settings.threshold}"
        raise UsageError(msg)
    if settings.algorithm not in ALGORITHMS:
        msg = f"unknown algorithm {settings.algorithm!r}; choose from {', '.join(ALGORITHMS)}"
        raise UsageError(msg)
    if settings.hash_size < 8 or settings.hash_size % 8:
        msg = f"hash size must be a multiple of 8 (8 gives 64 bits, 16 gives 256), not {settings.hash_size}"
        raise UsageError(msg)
    if settings.compat is not None and settings.compat not in COMPAT_MODES:
        msg = f"unknown compat mode {settings.compat!r}; choose from {', '.join(COMPAT_MODES)}"
        raise UsageError(msg)
    if settings.index not in INDEX_METHODS:
        msg = f"unknown index {settings.index!r}; choose from {', '.join(INDEX_METHODS)}"
        raise UsageError(msg)
    if not settings.roots:
        msg = "give at least one file or folder to scan"
        raise UsageError(msg)


# Seconds to sleep per file, for tests that must interrupt a scan part way
# (kill -9, SIGTERM) at a predictable point. Never set it otherwise.
_TEST_DELAY = float(os.environ.get("DUPFINDER_TEST_DELAY", "0") or 0)


def _hash_batch(paths: Sequence[str], spec: HashSpec) -> list:
    # Module-level so the spawn start method can pickle it by name.
    if _TEST_DELAY:
        out = []
        for p in paths:
            time.sleep(_TEST_DELAY)
            out.append(fingerprint_and_digest(p, spec))
        return out
    return [fingerprint_and_digest(p, spec) for p in paths]


def _digest_batch(paths: Sequence[str]) -> list:
    return [file_digest(p) for p in paths]


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def batch_size(jobs: int, workers: int) -> int:
    """Files per batch: enough to amortise pickling, small enough to balance load.

    >>> batch_size(100_000, 2), batch_size(10, 2)
    (64, 1)
    """
    return max(1, min(64, jobs // (max(workers, 1) * 4)))


def fingerprint_entries(
    entries: Sequence[FileEntry],
    spec: HashSpec,
    *,
    executor: Executor,
    workers: int = 1,
    progress: ProgressCallback = _noop,
    done: int = 0,
    total: int | None = None,
) -> Iterator[tuple[bytes | None, Fingerprint | ScanError]]:
    """Fingerprint files through an executor, yielding ``(digest, outcome)`` as each finishes.

    A batch whose worker process died is retried one file at a time, so one
    file that crashes a decoder becomes that file's error and no other's.
    """
    paths = [e.path for e in entries]
    work = partial(_hash_batch, spec=spec)
    total = len(paths) + done if total is None else total
    progress(Progress("hash", done, total))
    crashed: list[str] = []
    for batch, result in executor.map_unordered(work, _batches(paths, batch_size(len(paths), workers))):
        if isinstance(result, WorkerCrashed):
            crashed.extend(batch)
            continue
        yield from result
        done += len(result)
        progress(Progress("hash", done, total))
    for batch, result in executor.map_unordered(work, [[p] for p in crashed]):
        if isinstance(result, WorkerCrashed):
            yield None, ScanError(batch[0], "decode", "the decoder crashed on this file (worker process died)")
        else:
            yield from result
        done += 1
        progress(Progress("hash", done, total))


def _walk_all(
    settings: ScanSettings, progress: ProgressCallback
) -> tuple[list[FileEntry], list[ScanError]]:
    entries: dict[str, FileEntry] = {}
    errors: list[ScanError] = []
    found = 0
    for item in walk(
        settings.roots,
        include=settings.include,
        exclude=settings.exclude,
        follow_symlinks=settings.follow_symlinks,
    ):
        if isinstance(item, ScanError):
            errors.append(item)
            continue
        # Overlapping roots ("scan a a/b") must not list a file twice.
        entries.setdefault(os.path.normpath(item.path), item)
        found += 1
        if found % 500 == 0:
            progress(Progress("walk", found))
    progress(Progress("walk", len(entries), len(entries)))
    return list(entries.values()), errors


class _Collector:
    """Gathers outcomes into files and errors, and writes them to the cache in batches."""

    # A batch is committed every this many files or seconds, whichever comes
    # first: a kill -9 loses at most that much work.
    BATCH_FILES = 256
    BATCH_SECONDS = 2.0

    def __init__(self, by_path: dict[str, FileEntry], cache, spec: HashSpec, key: str):
        self.by_path = by_path
        self.cache = cache
        self.spec = spec
        self.key = key
        self.files: list[HashedFile] = []
        self.errors: list[ScanError] = []
        self.pending = 0
        self.last_commit = time.monotonic()

    def add_cached(self, entry: FileEntry, digest: bytes, hit) -> None:
        if hit.error_stage:
            self.errors.append(ScanError(entry.path, hit.error_stage, hit.error_message or ""))
        else:
            self.files.append(
                HashedFile(
                    entry.path, entry.size, entry.mtime_ns, hit.width, hit.height, hit.hash,
                    digest.hex(), hit.variants or "", 100 if hit.quality is None else hit.quality,
                )
            )

    def add(self, digest: bytes | None, outcome) -> None:
        entry = self.by_path[outcome.path]
        if isinstance(outcome, ScanError):
            self.errors.append(outcome)
        else:
            self.files.append(
                HashedFile(
                    entry.path, entry.size, entry.mtime_ns, outcome.width, outcome.height,
                    outcome.hash, digest.hex() if digest else "", outcome.variants, outcome.quality,
                )
            )
        if self.cache is None or digest is None:
            return  # unreadable bytes: nothing to key on, retried next time
        if isinstance(outcome, ScanError) and outcome.stage == "open" and "vanished" in outcome.message:
            return
        if isinstance(outcome, ScanError):
            record = CachedResult(None, None, None, outcome.stage, outcome.message)
        else:
            record = CachedResult(
                outcome.hash, outcome.width, outcome.height,
                variants=outcome.variants, quality=outcome.quality,
            )
        abspath = os.path.abspath(entry.path)
        self.cache.put_file(abspath, size=entry.size, mtime_ns=entry.mtime_ns, digest=digest)
        self.cache.put_result(digest, self.key, record)
        self.pending += 1
        now = time.monotonic()
        if self.pending >= self.BATCH_FILES or now - self.last_commit >= self.BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.cache is not None:
            self.cache.commit()
        self.pending = 0
        self.last_commit = time.monotonic()


def _split_cached(entries, cache, spec, key, collector, executor, workers, roots):
    """Answer what the cache knows; return the entries that must be decoded."""
    misses = []
    for e in entries:
        abspath = os.path.abspath(e.path)
        hit = cache.lookup(abspath, size=e.size, mtime_ns=e.mtime_ns, spec=key)
        if hit is None:
            misses.append(e)
        else:
            digest = cache.file_digest(abspath, size=e.size, mtime_ns=e.mtime_ns)
            collector.add_cached(e, digest, hit)
    if not misses:
        return misses
    # A renamed or moved file keeps its size: only new files whose size
    # matches a vanished entry's are digested to look for their old result.
    sizes = cache.sizes_of_missing(
        (os.path.abspath(e.path) for e in entries), under=[os.path.abspath(r) for r in roots]
    )
    maybe_moved = [e for e in misses if e.size in sizes]
    if not maybe_moved:
        return misses
    found: set[str] = set()
    paths = [e.path for e in maybe_moved]
    for batch, digests in executor.map_unordered(_digest_batch, _batches(paths, batch_size(len(paths), workers))):
        if isinstance(digests, WorkerCrashed):
            continue
        for path, digest in zip(batch, digests):
            if isinstance(digest, ScanError):
                continue
            hit = cache.lookup_digest(digest, spec=key)
            if hit is None:
                continue
            e = collector.by_path[path]
            cache.put_file(os.path.abspath(path), size=e.size, mtime_ns=e.mtime_ns, digest=digest)
            collector.add_cached(e, digest, hit)
            found.add(path)
    cache.commit()
    return [e for e in misses if e.path not in found]


def scan(
    paths: Iterable[str | os.PathLike],
    *,
    threshold: int | None = None,
    algorithm: str = "phash",
    hash_size: int = 8,
    compat: str | None = None,
    orient: bool = True,
    transforms: bool = True,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    follow_symlinks: bool = False,
    index: str = "auto",
    keep: str = "default",
    new_since: float | str | None = None,
    cache=None,
    prune: bool = True,
    workers: int | None = None,
    executor: Executor | None = None,
    progress: ProgressCallback | None = None,
) -> ScanResult:
    """Scan folders and files for near-duplicate images and group them.

    ``threshold`` is the largest Hamming distance, in bits, between two
    hashes of one group; None takes :func:`default_threshold` (5 for the
    default 64-bit pHash; see the README for each algorithm). With
    ``transforms`` a mirrored or rotated copy matches too, and the report
    names the transform.
    ``workers`` is the number of processes (None: one per CPU, 0: in this
    process); pass ``executor`` to run the work elsewhere. Files that cannot
    be read are returned in ``errors``; the scan goes on.

    ``cache`` is an open :class:`dupfinder.cache.Cache`: files whose path,
    size and mtime match an entry are not decoded, renamed files are found
    by their content, and the cache's ignore list is applied. ``new_since``
    (a Unix time, or ``"last"`` for the start of the last completed scan of
    the same roots; needs the cache) keeps only groups that gained a file
    since then. ``prune`` drops cache entries of files under the roots that
    no longer exist.

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> fractal = Image.effect_mandelbrot((256, 256), (-2, -1.5, 1, 1.5), 100)
    >>> fractal.save(d / "a.png")
    >>> fractal.resize((100, 100)).save(d / "b.png")
    >>> _ = (d / "c.png").write_bytes(b"not an image")
    >>> result = scan([d], workers=0)
    >>> [[pathlib.Path(m.path).name for m in g.members] for g in result.groups]
    [['a.png', 'b.png']]
    >>> [(pathlib.Path(e.path).name, e.stage) for e in result.errors]
    [('c.png', 'open')]
    """
    started = time.monotonic()
    progress = progress or _noop
    if threshold is None:
        threshold = default_threshold(algorithm, hash_size)
    settings = ScanSettings(
        roots=tuple(os.fspath(p) for p in paths),
        threshold=threshold,
        algorithm=algorithm,
        hash_size=hash_size,
        compat=compat,
        orient=orient,
        include=tuple(include),
        exclude=tuple(exclude),
        follow_symlinks=follow_symlinks,
        index=index,
        keep=keep,
        transforms=transforms,
    )
    validate_settings(settings)
    if new_since is not None and cache is None:
        msg = "--new-since needs the cache (it remembers when each file was first seen)"
        raise UsageError(msg)
    key_for = keep_rule(keep)
    spec = HashSpec(algorithm=algorithm, hash_size=hash_size, compat=compat, orient=orient)
    key = spec_key(algorithm, hash_size, spec.decode_mode)

    scan_id = None
    if cache is not None:
        scan_id = cache.start_scan(settings.roots, _settings_dict(settings))
        if new_since == "last":
            new_since = cache.last_completed_scan(settings.roots, before=scan_id)
            if new_since is None:
                new_since = float("-inf")  # no earlier scan: everything is new

    entries, walk_errors = _walk_all(settings, progress)
    by_path = {e.path: e for e in entries}
    own_executor = executor is None
    collector = _Collector(by_path, cache, spec, key)
    collector.errors.extend(walk_errors)
    if executor is None:
        executor = make_executor(workers, jobs=len(entries))
    n_workers = getattr(executor, "workers", 1)
    try:
        todo = entries
        if cache is not None:
            todo = _split_cached(entries, cache, spec, key, collector, executor, n_workers, settings.roots)
        cached = len(entries) - len(todo)
        for digest, outcome in fingerprint_entries(
            todo, spec, executor=executor, workers=n_workers, progress=progress,
            done=cached, total=len(entries),
        ):
            collector.add(digest, outcome)
    finally:
        # Interrupted or not, what was hashed stays cached for the next run.
        collector.flush()
        if own_executor:
            executor.close()

    files = sorted(collector.files, key=lambda f: f.path)
    errors = sorted(collector.errors, key=lambda e: (e.path, e.stage))
    progress(Progress("group", 0, 1))
    words, variants = _words(files, spec, transforms=transforms)
    ignored = cache.ignored_pairs() if cache is not None else set()
    groups = build_groups(
        files, words, threshold, method=index, key=key_for, ignored=ignored,
        variants=variants, transform_names=TRANSFORMS,
    )
    if new_since is not None:
        added = cache.added_at(os.path.abspath(f.path) for f in files)
        groups = only_new(groups, lambda p: added.get(os.path.abspath(p), float("inf")) > new_since)
    progress(Progress("group", 1, 1))
    if cache is not None:
        if prune:
            cache.prune(under=[os.path.abspath(r) for r in settings.roots])
        cache.finish_scan(scan_id)
    return ScanResult(
        settings=ScanSettings(**{**_settings_fields(settings), "new_since": new_since if new_since != float("-inf") else None}),
        files=tuple(files),
        groups=groups,
        errors=tuple(errors),
        elapsed=time.monotonic() - started,
        counts={
            "found": len(entries),
            "hashed": len(files),
            "decoded": len(todo),
            "cached": cached,
            "errors": len(errors),
            "low_information": sum(1 for f in files if is_low_information(f)),
            "groups": len(groups),
            "duplicates": sum(len(g) - 1 for g in groups),
        },
    )


def _settings_fields(settings: ScanSettings) -> dict:
    return {name: getattr(settings, name) for name in ScanSettings.__dataclass_fields__}


def _settings_dict(settings: ScanSettings) -> dict:
    d = _settings_fields(settings)
    d.pop("new_since", None)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _words(files: Sequence[HashedFile], spec: HashSpec, *, transforms: bool) -> tuple[np.ndarray, np.ndarray | None]:
    n_words = spec.bits // 64
    words = np.empty((len(files), n_words), dtype=np.uint64)
    for i, f in enumerate(files):
        words[i] = hashes.from_hex(f.hash)
    if not transforms or not files or any(not f.variants for f in files):
        return words, None
    variants = np.empty((len(files), len(TRANSFORMS), n_words), dtype=np.uint64)
    for i, f in enumerate(files):
        variants[i] = hashes.from_hex(f.variants).reshape(len(TRANSFORMS), n_words)
    return words, variants


def default_threshold(algorithm: str, hash_size: int) -> int:
    """The threshold used when none is given: 5 bits per 64, and PDQ's own 31.

    >>> default_threshold("phash", 8), default_threshold("phash", 16), default_threshold("pdq", 8)
    (5, 20, 31)
    """
    if algorithm == "pdq":
        return 31
    return round(5 * hash_size * hash_size / 64)
