"""Hash many files through an executor, answering from the cache where it can.

:class:`Hasher` is the part of the pipeline that both ``scan`` and
``match`` use: it yields a :class:`HashedFile` or a :class:`ScanError` per
file, as results arrive, so a caller can stream (``match``) or collect
(``scan``). With a cache it first answers what the cache knows (by path,
size and mtime, then by content digest for renamed files), hashes the rest
in the executor, and writes the new results back in batches.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from functools import partial

from .cache import Cache, CachedResult, spec_key
from .executor import Executor, WorkerCrashed, map_retrying
from .fingerprint import (
    HashSpec,
    file_digest,
    fingerprint_and_digest,
    fingerprint_digest_and_features,
)
from .imaging import OUT_OF_MEMORY
from .models import FileEntry, HashedFile, Progress, ScanError

__all__ = ["Hasher", "batch_size", "fingerprint_entries", "in_batches"]

ProgressCallback = Callable[[Progress], None]


def _noop(_: Progress) -> None:
    pass


# Seconds to sleep per file, for tests that must interrupt a scan part way
# (kill -9, SIGTERM) at a predictable point. Never set it otherwise.
_TEST_DELAY = float(os.environ.get("DUPFINDER_TEST_DELAY", "0") or 0)


def _hash_batch(paths: Sequence[str], spec: HashSpec, features: bool = False) -> list:
    """``(digest, outcome, features or None)`` of each path (see Hasher's ``features``)."""
    # Module-level so the spawn start method can pickle it by name.
    out = []
    for p in paths:
        if _TEST_DELAY:
            time.sleep(_TEST_DELAY)
        out.append(fingerprint_digest_and_features(p, spec) if features else (*fingerprint_and_digest(p, spec), None))
    return out


def _says_nothing_of_the_bytes(outcome) -> bool:
    return isinstance(outcome, ScanError) and (outcome.stage == "open" or outcome.message == OUT_OF_MEMORY)


# Formats whose decoding costs many times the reading of their bytes: worth
# a digest first when another file has the same size (Hasher._copies_aside).
_COMPRESSED = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".heic", ".heif", ".hif", ".avif"})


def _digest_batch(paths: Sequence[str]) -> list:
    return [file_digest(p) for p in paths]


def in_batches(items: Sequence, workers: int) -> Iterator[Sequence]:
    """``items`` in slices of :func:`batch_size` for this many items and workers.

    >>> [len(b) for b in in_batches(list(range(40)), 2)]
    [5, 5, 5, 5, 5, 5, 5, 5]
    """
    size = batch_size(len(items), workers)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def batch_size(jobs: int, workers: int) -> int:
    """Files per batch: enough to amortise pickling, small enough to balance load.

    A batch costs about 0.2 ms of pickling and queueing; 16 small photos take
    40 ms to hash, and the first results (and the last idle worker) wait for
    one batch: 64 a batch made a 568-file scan 5-8% slower (bench/hashing.py).

    >>> batch_size(100_000, 2), batch_size(10, 2)
    (16, 1)
    """
    return max(1, min(16, jobs // (max(workers, 1) * 4)))


def fingerprint_entries(
    entries: Sequence[FileEntry],
    spec: HashSpec,
    *,
    executor: Executor,
    workers: int = 1,
    progress: ProgressCallback = _noop,
    done: int = 0,
    total: int | None = None,
    features: bool = False,
) -> Iterator[tuple]:
    """Fingerprint files through an executor, yielding ``(digest, outcome, features)`` as each finishes.

    ``features`` (scan --partial) also gives a file's local features where
    the hashes' decode serves them (see
    :func:`dupfinder.fingerprint.fingerprint_digest_and_features`); else it
    is None. A batch whose worker process died is retried one file at a
    time, so one file that crashes a decoder becomes that file's error and
    no other's.
    """
    paths = [e.path for e in entries]
    work = partial(_hash_batch, spec=spec, features=features)
    total = len(paths) + done if total is None else total
    progress(Progress("hash", done, total))
    for batch, result in map_retrying(executor, work, in_batches(paths, workers)):
        if isinstance(result, WorkerCrashed):
            yield None, ScanError(batch[0], "decode", "the decoder crashed on this file (worker process died)"), None
        else:
            yield from result
        done += len(batch)
        progress(Progress("hash", done, total))



class Hasher:
    """Hashes entries, using and filling a cache; counts what it decoded.

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from dupfinder.executor import InlineExecutor
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> Image.effect_mandelbrot((64, 64), (-2, -1, 1, 1), 50).save(d / "m.png")
    >>> e = FileEntry(str(d / "m.png"), (d / "m.png").stat().st_size, (d / "m.png").stat().st_mtime_ns)
    >>> with Cache(":memory:") as c:
    ...     first = list(Hasher(HashSpec(), cache=c, executor=InlineExecutor()).run([e]))
    ...     again = Hasher(HashSpec(), cache=c, executor=InlineExecutor())
    ...     second = list(again.run([e]))
    >>> first == second, again.decoded, again.cached
    (True, 0, 1)
    """

    # A batch is committed every this many files or seconds, whichever comes
    # first: a kill -9 loses at most that much work.
    BATCH_FILES = 256
    BATCH_SECONDS = 2.0

    def __init__(
        self,
        spec: HashSpec,
        *,
        cache: Cache | None,
        executor: Executor,
        workers: int = 1,
        progress: ProgressCallback = _noop,
        roots: Sequence[str] = (),
        features: bool = False,
    ):
        self.spec = spec
        # scan --partial: local features the hashes' decode served, by content
        # digest (the features pass computes the others).
        self.want_features = features and spec.compat is None
        self.features: dict[bytes, object] = {}
        self.cache = cache
        self.executor = executor
        self.workers = workers
        self.progress = progress
        self.roots = tuple(roots)
        self.key = spec_key(spec.algorithm, spec.hash_size, spec.decode_mode)
        self.decoded = 0
        self.cached = 0
        self._pending = 0
        self._last_commit = time.monotonic()

    def run(self, entries: Sequence[FileEntry]) -> Iterator[HashedFile | ScanError]:
        """Yield one HashedFile or ScanError per entry, cached answers first.

        Byte-for-byte copies are decoded once: files that share a size are
        digested first (reading costs about 1% of decoding), and a copy
        takes the fingerprint of the first file with its bytes.
        """
        by_path = {e.path: e for e in entries}
        todo: Sequence[FileEntry] = entries
        digested: dict[str, bytes] = {}  # digests read on the way, so no file is read for one twice
        try:
            if self.cache is not None:
                todo = []
                yield from self._cached(entries, by_path, todo, digested)
            self.cached = len(entries) - len(todo)
            todo, copies = self._copies_aside(todo, digested)
            unread: list[FileEntry] = []
            # The bar counts a copy when its answer comes (with its first
            # file's, or after its own decoding), so that it reaches the end
            # only when every file has one.
            answered_copies = 0

            def report(p: Progress) -> None:
                self.progress(dataclasses.replace(p, done=p.done + answered_copies))

            for entry, digest, outcome in self._decoded(todo, by_path, progress=report,
                                                        done=self.cached, total=len(entries)):
                yield self._record(entry, digest, outcome)
                for copy, copy_digest in copies.pop(entry.path, ()):
                    # A file that could not be read, changed since it was
                    # digested or ran out of memory says nothing about its
                    # copies' bytes: they are read themselves.
                    if digest != copy_digest or _says_nothing_of_the_bytes(outcome):
                        unread.append(copy)
                    else:
                        answered_copies += 1
                        yield self._record(copy, copy_digest, dataclasses.replace(outcome, path=copy.path))
            if unread:
                for entry, digest, outcome in self._decoded(unread, by_path, progress=self.progress,
                                                            done=len(entries) - len(unread), total=len(entries)):
                    yield self._record(entry, digest, outcome)
        finally:
            # Interrupted or not, what was hashed stays cached for the next run.
            self.flush()

    def _decoded(self, entries: Sequence[FileEntry], by_path: dict, *, progress: ProgressCallback = _noop,
                 done: int = 0, total: int | None = None) -> Iterator[tuple]:
        """``(entry, digest, outcome)`` of each entry decoded, counted, its features (if any) kept by digest."""
        for digest, outcome, features in fingerprint_entries(
            entries, self.spec, executor=self.executor, workers=self.workers, progress=progress,
            done=done, total=total, features=self.want_features,
        ):
            self.decoded += 1
            if features is not None and digest is not None:
                self.features[digest] = features
            yield by_path[outcome.path], digest, outcome

    def _copies_aside(self, todo: Sequence[FileEntry], digested: dict[str, bytes]
                      ) -> tuple[list[FileEntry], dict[str, list]]:
        """The entries to decode, and for each the later entries with the same bytes: ``path -> [(entry, digest)]``.

        Only files whose size another file has can be copies; they alone are
        digested here, so a tree of distinct sizes costs nothing more. Nor
        are uncompressed formats (BMP, TIFF): reading one costs about what
        decoding it does, and scanners write many files of one size.
        """
        sizes = Counter(e.size for e in todo)
        twins = [e.path for e in todo if sizes[e.size] > 1 and os.path.splitext(e.path)[1].lower() in _COMPRESSED]
        digests = {p: digested[p] for p in twins if p in digested}  # read by _cached's rename search
        twins = [p for p in twins if p not in digests]
        done = 0
        if twins:  # a stage of its own: a tree of many copies reads for a while
            self.progress(Progress("copies", 0, len(twins)))
        for batch, result in self.executor.map_unordered(_digest_batch, in_batches(twins, self.workers)):
            if not isinstance(result, WorkerCrashed):  # else those files are simply decoded
                digests.update((p, d) for p, d in zip(batch, result) if isinstance(d, bytes))
            done += len(batch)
            self.progress(Progress("copies", done, len(twins)))
        first: dict[bytes, str] = {}
        copies: dict[str, list] = {}
        keep = []
        for e in todo:
            d = digests.get(e.path)
            if d is not None and first.setdefault(d, e.path) != e.path:
                copies.setdefault(first[d], []).append((e, d))
            else:
                keep.append(e)
        return keep, copies

    def _record(self, entry: FileEntry, digest: bytes | None, outcome) -> HashedFile | ScanError:
        if isinstance(outcome, ScanError):
            record = CachedResult(None, None, None, outcome.stage, outcome.message)
            out = outcome
        else:
            record = CachedResult(
                outcome.hash, outcome.width, outcome.height,
                variants=outcome.variants, quality=outcome.quality, extras=outcome.extras,
            )
            out = HashedFile(
                entry.path, entry.size, entry.mtime_ns, outcome.width, outcome.height,
                outcome.hash, digest.hex() if digest else "", outcome.variants, outcome.quality,
                outcome.extras,
            )
        vanished = isinstance(outcome, ScanError) and "vanished" in outcome.message
        # Unreadable bytes have nothing to key on: they are retried next time.
        if self.cache is not None and digest is not None and not vanished:
            abspath = os.path.abspath(entry.path)
            self.cache.put_file(abspath, size=entry.size, mtime_ns=entry.mtime_ns, digest=digest)
            self.cache.put_result(digest, self.key, record)
            self._pending += 1
            now = time.monotonic()
            if self._pending >= self.BATCH_FILES or now - self._last_commit >= self.BATCH_SECONDS:
                self.flush()
        return out

    def flush(self) -> None:
        """Commit the pending batch to the cache."""
        if self.cache is not None:
            self.cache.commit()
        self._pending = 0
        self._last_commit = time.monotonic()

    @staticmethod
    def _from_cache(entry: FileEntry, digest: bytes | None, hit: CachedResult) -> HashedFile | ScanError:
        if hit.error_stage:
            return ScanError(entry.path, hit.error_stage, hit.error_message or "")
        return HashedFile(
            entry.path, entry.size, entry.mtime_ns, hit.width, hit.height, hit.hash,
            digest.hex() if digest else "", hit.variants or "", 100 if hit.quality is None else hit.quality,
            hit.extras or "",
        )

    def _cached(self, entries, by_path, misses: list[FileEntry], digested: dict[str, bytes]
                ) -> Iterator[HashedFile | ScanError]:
        """Yield what the cache knows, as it is looked up; put the entries that must be decoded in ``misses``.

        The digests read to find renamed files go in ``digested``.
        """
        cache, key = self.cache, self.key
        for e in entries:
            abspath = os.path.abspath(e.path)
            hit = cache.lookup(abspath, size=e.size, mtime_ns=e.mtime_ns, spec=key)
            if hit is None:
                misses.append(e)
            else:
                yield self._from_cache(e, hit.digest, hit)
        if not misses or not self.roots:
            return
        # A renamed or moved file keeps its size: only new files whose size
        # matches a vanished entry's are digested to look for their old result.
        roots = [os.path.abspath(r) for r in self.roots]
        sizes = cache.sizes_of_missing((os.path.abspath(e.path) for e in entries), under=roots)
        # Or moved in from a tree scanned on its own, with the same cache.
        sizes |= cache.sizes_gone_elsewhere({e.size for e in misses} - sizes, under=roots)
        paths = [e.path for e in misses if e.size in sizes]
        found: set[str] = set()
        for batch, digests in self.executor.map_unordered(_digest_batch, in_batches(paths, self.workers)):
            if isinstance(digests, WorkerCrashed):
                continue
            for path, digest in zip(batch, digests):
                if isinstance(digest, ScanError):
                    continue
                digested[path] = digest
                hit = cache.lookup_digest(digest, spec=key)
                if hit is None:
                    continue
                e = by_path[path]
                cache.put_file(os.path.abspath(path), size=e.size, mtime_ns=e.mtime_ns, digest=digest)
                found.add(path)
                yield self._from_cache(e, digest, hit)
        cache.commit()
        if found:
            misses[:] = [e for e in misses if e.path not in found]
