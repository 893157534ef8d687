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
from .cluster import build_groups
from .executor import Executor, WorkerCrashed, make_executor
from .fingerprint import COMPAT_MODES, Fingerprint, HashSpec, fingerprint_file
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

__all__ = ["scan", "fingerprint_entries", "ProgressCallback", "validate_settings"]

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
    if settings.algorithm not in hashes.ALGORITHMS:
        msg = f"unknown algorithm {settings.algorithm!r}; choose from {', '.join(hashes.ALGORITHMS)}"
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


def _hash_batch(paths: Sequence[str], spec: HashSpec) -> list[Fingerprint | ScanError]:
    # Module-level so the spawn start method can pickle it by name.
    return [fingerprint_file(p, spec) for p in paths]


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
) -> Iterator[Fingerprint | ScanError]:
    """Fingerprint files through an executor, yielding results as they finish.

    A batch whose worker process died is retried one file at a time, so one
    file that crashes a decoder becomes that file's error and no other's.
    """
    paths = [e.path for e in entries]
    work = partial(_hash_batch, spec=spec)
    done = 0
    total = len(paths)
    progress(Progress("hash", 0, total))
    crashed: list[str] = []
    for batch, result in executor.map_unordered(work, _batches(paths, batch_size(total, workers))):
        if isinstance(result, WorkerCrashed):
            crashed.extend(batch)
            continue
        yield from result
        done += len(result)
        progress(Progress("hash", done, total))
    for batch, result in executor.map_unordered(work, [[p] for p in crashed]):
        if isinstance(result, WorkerCrashed):
            yield ScanError(batch[0], "decode", "the decoder crashed on this file (worker process died)")
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


def scan(
    paths: Iterable[str | os.PathLike],
    *,
    threshold: int = 5,
    algorithm: str = "phash",
    hash_size: int = 8,
    compat: str | None = None,
    orient: bool = True,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    follow_symlinks: bool = False,
    index: str = "auto",
    workers: int | None = None,
    executor: Executor | None = None,
    progress: ProgressCallback | None = None,
) -> ScanResult:
    """Scan folders and files for near-duplicate images and group them.

    ``threshold`` is the largest Hamming distance, in bits, between two
    hashes of one group (see the README for what suits each algorithm).
    ``workers`` is the number of processes (None: one per CPU, 0: in this
    process); pass ``executor`` to run the work elsewhere. Files that cannot
    be read are returned in ``errors``; the scan goes on.

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
    )
    validate_settings(settings)
    spec = HashSpec(algorithm=algorithm, hash_size=hash_size, compat=compat, orient=orient)

    entries, errors = _walk_all(settings, progress)
    by_path = {e.path: e for e in entries}
    own_executor = executor is None
    if executor is None:
        executor = make_executor(workers, jobs=len(entries))
    n_workers = getattr(executor, "workers", 1)
    files: list[HashedFile] = []
    try:
        for outcome in fingerprint_entries(
            entries, spec, executor=executor, workers=n_workers, progress=progress
        ):
            if isinstance(outcome, ScanError):
                errors.append(outcome)
                continue
            entry = by_path[outcome.path]
            files.append(
                HashedFile(entry.path, entry.size, entry.mtime_ns, outcome.width, outcome.height, outcome.hash)
            )
    finally:
        if own_executor:
            executor.close()

    files.sort(key=lambda f: f.path)
    errors.sort(key=lambda e: (e.path, e.stage))
    progress(Progress("group", 0, 1))
    words = _words(files, spec)
    groups = build_groups(files, words, threshold, method=index)
    progress(Progress("group", 1, 1))
    return ScanResult(
        settings=settings,
        files=tuple(files),
        groups=groups,
        errors=tuple(errors),
        elapsed=time.monotonic() - started,
        counts={
            "found": len(entries),
            "hashed": len(files),
            "errors": len(errors),
            "groups": len(groups),
            "duplicates": sum(len(g) - 1 for g in groups),
        },
    )


def _words(files: Sequence[HashedFile], spec: HashSpec) -> np.ndarray:
    n_words = spec.bits // 64
    out = np.empty((len(files), n_words), dtype=np.uint64)
    for i, f in enumerate(files):
        out[i] = hashes.from_hex(f.hash)
    return out
