"""Infringement checks: which target images are copies of protected references.

``match`` streams the targets: it walks, decodes, hashes and matches them in
chunks against a :class:`~dupfinder.reference.ReferenceIndex`, so memory is
bounded by the reference set and the matches found, not by the number of
targets. Only target-against-reference pairs are computed; references are
never compared with each other, nor targets with targets.

Each target carries its hash under the 8 flips and quarter turns; if variant
``t`` of a target is within the threshold of a reference, the target is the
reference turned by the inverse of ``t``, and the report names that.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from . import hashes
from .cluster import INVERSE, is_low_information
from .executor import Executor, make_executor, worker_count
from .fingerprint import ALGORITHMS, TRANSFORMS, HashSpec
from .hashing import Hasher, ProgressCallback, _noop
from .index import find_matches
from .models import FileEntry, HashedFile, Progress, ScanError, ScanSettings, UsageError
from .reference import ReferenceIndex, from_files
from .scan import (
    check_arguments,
    default_threshold,
    roots_of,
    validate_settings,
    walk_entries,
    whole_number,
)
from .walk import walk

__all__ = ["RefHit", "Match", "MatchResult", "build_reference", "match"]


@dataclass(frozen=True, slots=True)
class RefHit:
    """One reference a target matched: its label, distance and the transform.

    With ``--partial``, ``transform`` may be ``crop`` (the target shows a part
    of the reference; ``box`` is that part, in the reference's pixels) or
    ``contained`` (the target shows the reference inside a larger frame;
    ``box`` is where, in the target's pixels), with ``+mirror`` if mirrored.
    """

    reference: str
    index: int
    distance: int
    transform: str
    box: tuple[int, int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """A target file and every reference within the threshold, closest first."""

    path: str
    size: int
    mtime_ns: int
    width: int
    height: int
    hash: str
    hits: tuple[RefHit, ...]

    @property
    def best(self) -> RefHit:
        return self.hits[0]


@dataclass(frozen=True)
class MatchResult:
    """What ``match`` found: the matching targets (by path), errors and counts."""

    settings: ScanSettings
    references: tuple[str, ...]
    matches: tuple[Match, ...]
    errors: tuple[ScanError, ...]
    elapsed: float = 0.0
    counts: dict = field(default_factory=dict, compare=False)

    @property
    def has_matches(self) -> bool:
        return bool(self.matches)


def build_reference(
    paths: Iterable[str | os.PathLike],
    *,
    algorithm: str = "phash",
    hash_size: int = 8,
    compat: str | None = None,
    orient: bool = True,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    follow_symlinks: bool = False,
    cache=None,
    workers: int | None = None,
    executor: Executor | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[ReferenceIndex, tuple[ScanError, ...]]:
    """Hash a folder of originals into a reference index (and the files that failed).

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> Image.effect_mandelbrot((256, 256), (-2, -1.5, 1, 1.5), 100).save(d / "orig.png")
    >>> ref, errors = build_reference([d], workers=0)
    >>> [pathlib.Path(label).name for label in ref.labels], errors
    (['orig.png'], ())
    """
    check_arguments(cache=cache, workers=workers, executor=executor, progress=progress)
    hash_size = whole_number("hash_size", hash_size)
    settings = ScanSettings(
        roots=roots_of(paths), algorithm=algorithm, hash_size=hash_size,
        compat=compat, orient=orient, include=tuple(include), exclude=tuple(exclude),
        follow_symlinks=follow_symlinks,
    )
    validate_settings(settings)
    spec = HashSpec(algorithm=algorithm, hash_size=hash_size, compat=compat, orient=orient)
    entries, errors = walk_entries(settings, progress or _noop)
    own = executor is None
    executor = executor or make_executor(workers, jobs=len(entries))
    files: list[HashedFile] = []
    try:
        hasher = Hasher(spec, cache=cache, executor=executor, workers=worker_count(executor),
                        progress=progress or _noop, roots=settings.roots)
        for item in hasher.run(entries):
            (errors if isinstance(item, ScanError) else files).append(item)
    finally:
        if own:
            executor.close()
    index = from_files(files, algorithm=algorithm, hash_size=hash_size, decode_mode=spec.decode_mode)
    return index, tuple(sorted(errors, key=lambda e: e.path))


PARTIAL_CHUNK = 1024  # targets hashed at a time by match(partial=True)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _overlapping(roots: Sequence[str]) -> bool:
    absolute = [os.path.join(os.path.abspath(r), "") for r in roots]
    return any(a != b and a.startswith(b) for a in absolute for b in absolute) or len(set(absolute)) < len(absolute)


def _hits_for_chunk(
    files: list[HashedFile], reference: ReferenceIndex, threshold: int, transforms: bool, by_digest: dict
) -> list[Match]:
    words = reference.hashes.shape[1]
    n_variants = len(TRANSFORMS) if transforms else 1
    # target -> ref -> (distance, rank, transform name); on equal distance the
    # lower rank wins: as is, then a flip or turn, then a crop, turn or edit.
    found: dict[int, dict[int, tuple[int, int, str]]] = {}

    def offer(target: int, ref: int, distance: int, rank: int, name: str) -> None:
        best = found.setdefault(target, {}).get(ref)
        if best is None or (distance, rank) < best[:2]:
            found[target][ref] = (distance, rank, name)

    eligible = [i for i, f in enumerate(files) if not is_low_information(f) and f.variants]
    if eligible and len(reference):
        q = np.empty((len(eligible), n_variants, words), dtype=np.uint64)
        for row, i in enumerate(eligible):
            q[row] = hashes.from_hex(files[i].variants[: n_variants * words * 16]).reshape(n_variants, words)
        flat = q.reshape(-1, words)
        db = reference.hashes
        pairs = find_matches(flat[:, 0] if words == 1 else flat, db[:, 0] if words == 1 else db, threshold)
        for qi, ri, d in zip(pairs.left.tolist(), pairs.right.tolist(), pairs.distance.tolist()):
            variant = qi % n_variants
            name = "" if variant == 0 else INVERSE[TRANSFORMS[variant]]
            offer(eligible[qi // n_variants], ri, d, 0 if variant == 0 else 1, name)
        with_extras = [i for i in eligible if files[i].extras]
        if transforms and reference.extras is not None and reference.variants is not None and with_extras:
            from .robust import extra_matches

            t_extras = np.stack([hashes.from_hex(files[i].extras).reshape(-1, words) for i in with_extras])
            t_variants = np.stack([hashes.from_hex(files[i].variants).reshape(-1, words) for i in with_extras])
            for t, ri, d, name in extra_matches(
                t_extras, t_variants, reference.extras, reference.variants, threshold
            ):
                offer(with_extras[t], ri, d, 2, name)
    for i, f in enumerate(files):
        for ri in by_digest.get(f.digest, ()) if f.digest else ():
            found.setdefault(i, {})[ri] = (-1, -1, "identical")  # byte-identical: first of all
    out = []
    for i, refs in sorted(found.items()):
        f = files[i]
        hits = [RefHit(reference.labels[ri], ri, max(d, 0), name) for ri, (d, _, name) in refs.items()]
        hits.sort(key=lambda h: (h.distance, h.transform != "identical", h.reference))
        out.append(Match(f.path, f.size, f.mtime_ns, f.width, f.height, f.hash, tuple(hits)))
    return out


def _reference_features(reference: ReferenceIndex, executor, orient: bool, errors: list, stored, progress) -> list:
    """Local features of the references whose labels are image files; UsageError if none is.

    A reference whose file the cache knows unchanged (``stored``, a
    :class:`~dupfinder.partial_store.StoredFeatures`) has its features read
    back; the others are computed in the workers, and stored where the cache
    knows the bytes. A reference image that cannot be read (gone, damaged)
    goes to ``errors`` (stage ``partial``): it is matched by its hashes only.
    """
    from .partial import Features, features_for

    labels = list(reference.labels)
    features: list = [None] * len(labels)
    known = {}
    for i, label in enumerate(labels):
        file = stored.known(label)
        if file is not None:
            features[i] = stored.get(label, file[2])
            known[i] = file
    todo = [i for i, f in enumerate(features) if f is None]
    found = features_for([labels[i] for i in todo], executor=executor, workers=worker_count(executor), orient=orient,
                         progress=progress)
    for i, f in zip(todo, found):
        if isinstance(f, Features):
            features[i] = f
            if i in known:
                size, mtime_ns, digest = known[i]
                stored.put_bytes(f, path=labels[i], size=size, mtime_ns=mtime_ns, digest=digest)
        elif f is not None:
            errors.append(ScanError(f.path, f.stage, f"reference: {f.message}"))
    if not any(f is not None for f in features):
        msg = ("partial matching needs the reference images: give --reference a folder of images "
               "(or an index built from one whose files are still there)")
        raise UsageError(msg)
    return features


def _with_partial(found: list[Match], files: list[HashedFile], reference: ReferenceIndex, refs,
                  *, transforms: bool, errors: list, stored, ready: dict, workers: int) -> list[Match]:
    """Add the references each target copies in part to the chunk's matches (``refs``: partial_refs.References).

    A target's features come from the cache (``stored``, a
    :class:`~dupfinder.partial_store.StoredFeatures`) or from the hashing
    pass's decode (``ready``, by digest) where they can; the workers compute
    the others, and those are stored. A target whose worker died on its
    local features goes to ``errors``.
    """
    from .index import hamming_distance

    where = {f.path: i for i, f in enumerate(files)}
    by_path = {m.path: m for m in found}
    words = reference.hashes.shape[1]
    extra: dict[int, list[RefHit]] = {}

    def at_hand(path: str):
        f = files[where[path]]
        digest = bytes.fromhex(f.digest) if f.digest else None
        features = stored.get(path, digest)
        if features is None and digest in ready:
            features = replace(ready.pop(digest), path=path)
            stored.put(f, features)
        return features

    def keep(path: str, features) -> None:
        stored.put(files[where[path]], features)

    eligible = [f.path for f in files if not is_low_information(f)]
    computed = keep if stored.cache is not None else None
    for path, partial_matches in refs.match(eligible, workers=workers, known=at_hand, computed=computed):
        if isinstance(partial_matches, ScanError):
            errors.append(partial_matches)
            continue
        i = where[path]
        f = files[i]
        known = by_path.get(f.path)
        mine = hashes.from_hex(f.variants or f.hash).reshape(-1, words)
        for p in partial_matches:  # a: reference, b: target
            if (known is not None and any(h.index == p.a for h in known.hits)) or (p.mirrored and not transforms):
                continue
            distance = int(hamming_distance(mine, reference.hashes[p.a][None, :]).min())
            extra.setdefault(i, []).append(RefHit(reference.labels[p.a], p.a, distance, p.transform, p.box))
    for i, hits in extra.items():
        f = files[i]
        known = by_path.get(f.path)
        every = sorted((*(known.hits if known else ()), *hits),
                       key=lambda h: (h.distance, h.transform != "identical", h.reference))
        by_path[f.path] = Match(f.path, f.size, f.mtime_ns, f.width, f.height, f.hash, tuple(every))
    return list(by_path.values())


def match(
    targets: Iterable[str | os.PathLike],
    reference: ReferenceIndex,
    *,
    threshold: int | None = None,
    transforms: bool = True,
    orient: bool = True,
    compat: str | None = None,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    follow_symlinks: bool = False,
    cache=None,
    workers: int | None = None,
    executor: Executor | None = None,
    progress: ProgressCallback | None = None,
    chunk: int = 4096,
    partial: bool = False,
) -> MatchResult:
    """Find the target images that are copies of references, streaming the targets.

    Targets are hashed with the reference's algorithm and hash size.
    ``threshold`` defaults as for ``scan`` (5 for 64-bit pHash, 31 for PDQ).
    ``partial`` also finds targets that show a part of a reference or hold
    it inside a larger frame (see :mod:`dupfinder.partial`); it needs the
    reference images (a folder, or an index or list whose labels are paths
    of images that still exist) and ``pip install 'dupfinder[partial]'``.

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> refs, found = pathlib.Path(tempfile.mkdtemp()), pathlib.Path(tempfile.mkdtemp())
    >>> art = Image.effect_mandelbrot((256, 256), (-2, -1.5, 1, 1.5), 100)
    >>> art.save(refs / "art.png")
    >>> art.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((128, 128)).save(found / "copy.png")
    >>> index, _ = build_reference([refs], workers=0)
    >>> result = match([found], index, workers=0)
    >>> [(pathlib.Path(m.path).name, m.best.transform) for m in result.matches]
    [('copy.png', 'mirror')]
    """
    started = time.monotonic()
    check_arguments(cache=cache, workers=workers, executor=executor, progress=progress)
    progress = progress or _noop
    algorithm, hash_size = reference.algorithm, reference.hash_size
    if algorithm not in ALGORITHMS:
        msg = f"the reference uses {algorithm!r}, which this dupfinder cannot compute"
        raise UsageError(msg)
    threshold = default_threshold(algorithm, hash_size) if threshold is None else whole_number("threshold", threshold)
    settings = ScanSettings(
        roots=roots_of(targets), threshold=threshold, algorithm=algorithm,
        hash_size=hash_size, compat=compat, orient=orient, include=tuple(include),
        exclude=tuple(exclude), follow_symlinks=follow_symlinks, transforms=transforms,
        partial=partial,
    )
    validate_settings(settings)
    if partial:
        from .partial import require_opencv

        require_opencv()
    spec = HashSpec(algorithm=algorithm, hash_size=hash_size, compat=compat, orient=orient)
    by_digest: dict[str, list[int]] = {}
    for i, d in enumerate(reference.digests):
        if d:
            by_digest.setdefault(d, []).append(i)

    own = executor is None
    matches: list[Match] = []
    errors: list[ScanError] = []
    counts = {"targets": 0, "hashed": 0, "decoded": 0, "cached": 0, "low_information": 0}
    seen: set[str] | None = set() if _overlapping(settings.roots) else None
    base = 0

    def entries() -> Iterator[FileEntry]:
        for item in walk(settings.roots, include=settings.include, exclude=settings.exclude,
                         follow_symlinks=settings.follow_symlinks):
            if isinstance(item, ScanError):
                errors.append(item)
                continue
            if seen is not None:
                key = os.path.abspath(item.path)
                if key in seen:
                    continue
                seen.add(key)
            yield item

    # The first chunk tells how much work there is: a handful of targets is
    # hashed in this process rather than by a pool that costs more to start.
    # With partial, the hashing decode's features of a chunk's targets wait
    # in this process for their matching (about 45 KB each): chunks of
    # PARTIAL_CHUNK keep that under 50 MB.
    chunks = _chunks(entries(), min(chunk, PARTIAL_CHUNK) if partial else chunk)
    first = next(chunks, [])
    if executor is None:
        executor = make_executor(workers, jobs=len(first) + (len(reference) if partial else 0))
    stack = contextlib.ExitStack()
    try:
        refs = stored = None
        if partial:
            from .partial_refs import references
            from .partial_store import StoredFeatures

            stored = StoredFeatures(cache, orient=orient)
            stack.callback(stored.close)

            # The references' features go to a memory-mapped folder once; the
            # list is not kept (10^4 references hold 0.5 GB of them).
            refs = stack.enter_context(references(
                _reference_features(reference, executor, orient, errors, stored, progress), executor=executor,
                orient=orient))
        for batch in itertools.chain([first] if first else [], chunks):
            def report(p: Progress, _base=base) -> None:
                # One bar for the whole stream of targets; a chunk's short
                # search for byte-for-byte copies would only make it jump.
                if p.stage == "hash":
                    progress(Progress("hash", _base + p.done, None))

            hasher = Hasher(spec, cache=cache, executor=executor,
                            workers=worker_count(executor), progress=report, features=partial)
            files = []
            for item in hasher.run(batch):
                (errors if isinstance(item, ScanError) else files).append(item)
            counts["targets"] += len(batch)
            counts["hashed"] += len(files)
            counts["decoded"] += hasher.decoded
            counts["cached"] += hasher.cached
            counts["low_information"] += sum(1 for f in files if is_low_information(f))
            found = _hits_for_chunk(files, reference, threshold, transforms, by_digest)
            if refs is not None:
                found = _with_partial(found, files, reference, refs, transforms=transforms, errors=errors,
                                      stored=stored, ready=hasher.features, workers=worker_count(executor))
            matches.extend(found)
            base += len(batch)
    finally:
        try:
            if own:  # first: a worker that maps the references' folder lets it go (Windows deletes no mapped file)
                executor.close()
        finally:
            stack.close()
    matches.sort(key=lambda m: m.path)
    errors.sort(key=lambda e: (e.path, e.stage))
    counts.update(references=len(reference), matches=len(matches), errors=len(errors))
    return MatchResult(settings, reference.labels, tuple(matches), tuple(errors),
                       time.monotonic() - started, counts)
