"""The scan pipeline: walk, fingerprint in a worker pool, index, group.

``scan()`` is what ``dupfinder scan`` runs. It reports progress as
:class:`Progress` records through a callback and returns every failure as a
:class:`ScanError` in the result; it prints nothing.
"""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Iterable

from .cluster import build_groups, keep_key, keep_rule, only_new
from .executor import Executor, make_executor, worker_count
from .filetable import FileTable, TableBuilder
from .fingerprint import ALGORITHMS, COMPAT_MODES, TRANSFORMS, HashSpec
from .hashing import Hasher, ProgressCallback, _noop
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

__all__ = [
    "scan", "walk_entries", "collect", "group_files", "ProgressCallback", "validate_settings", "default_threshold",
]

INDEX_METHODS = ("auto", "mih", "bktree", "brute")
# 32 gives 1024-bit hashes; bigger grids only add noise bits and slow every step.
MAX_HASH_SIZE = 32


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
    check_hash_size(settings.hash_size)
    if settings.algorithm == "whash" and settings.hash_size & (settings.hash_size - 1):
        msg = f"whash needs a hash size that is a power of 2 (8, 16 or 32), not {settings.hash_size}"
        raise UsageError(msg)
    bits = 256 if settings.algorithm == "pdq" else settings.hash_size * settings.hash_size
    if settings.threshold > bits // 2:
        # Two unrelated pictures' hashes differ in about half their bits.
        msg = (f"a threshold of {settings.threshold} bits of {bits} would match unrelated pictures "
               f"(their hashes differ in about {bits // 2}); use at most {bits // 2}")
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


def check_hash_size(hash_size: int) -> None:
    """UsageError unless ``hash_size`` is a multiple of 8 up to :data:`MAX_HASH_SIZE` (``scan`` and ``hash`` alike).

    >>> check_hash_size(16)
    >>> check_hash_size(12)
    Traceback (most recent call last):
    ...
    dupfinder.models.UsageError: hash size must be a multiple of 8 up to 32 (8 gives 64 bits, 16 gives 256), not 12
    """
    if hash_size < 8 or hash_size % 8 or hash_size > MAX_HASH_SIZE:
        msg = f"hash size must be a multiple of 8 up to {MAX_HASH_SIZE} (8 gives 64 bits, 16 gives 256), not {hash_size}"
        raise UsageError(msg)


def roots_of(paths) -> tuple[str, ...]:
    """The roots a caller gave: a list of paths, or one path (not its characters); UsageError otherwise.

    >>> roots_of(["a", "b"]), roots_of("photos")
    (('a', 'b'), ('photos',))
    """
    # Bytes paths become str (as os.fsdecode gives them) so that the walk
    # compares extensions like any other path.
    if isinstance(paths, (str, bytes, os.PathLike)):
        return (os.fsdecode(paths),)
    try:
        return tuple(os.fsdecode(p) for p in paths)
    except TypeError:
        msg = f"give the files and folders to scan as a list of paths, not {paths!r:.60}"
        raise UsageError(msg) from None


def check_arguments(*, cache=None, workers=None, executor=None, progress=None) -> None:
    """UsageError for a library argument of the wrong kind, before any work (not a TypeError from deep inside).

    >>> check_arguments(workers=-1)
    Traceback (most recent call last):
    ...
    dupfinder.models.UsageError: workers must be None (one per CPU), 0 (this process) or more, not -1
    """
    from .cache import Cache

    if cache is not None and not isinstance(cache, Cache):
        msg = f"cache must be an open dupfinder.cache.Cache (Cache(path)), not {type(cache).__name__}"
        raise UsageError(msg)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 0):
        msg = f"workers must be None (one per CPU), 0 (this process) or more, not {workers!r}"
        raise UsageError(msg)
    if executor is not None and not callable(getattr(executor, "map_unordered", None)):
        msg = "executor must have map_unordered(fn, items) and close() (see the README)"
        raise UsageError(msg)
    if progress is not None and not callable(progress):
        msg = f"progress must be a callable that takes Progress records, not {type(progress).__name__}"
        raise UsageError(msg)


def whole_number(name: str, value) -> int:
    """``value`` if it is an int (not a bool), else UsageError naming ``name``.

    >>> whole_number("threshold", 5)
    5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy's integers too
        msg = f"{name} must be a whole number, not {value!r}"
        raise UsageError(msg)
    return int(value)


def walk_entries(
    settings: ScanSettings, progress: ProgressCallback = _noop
) -> tuple[list[FileEntry], list[ScanError]]:
    """Walk the settings' roots: the image files once each, and the walk's errors."""
    entries: dict[str, FileEntry] = {}
    errors: list[ScanError] = []
    found = 0
    # A root that is a link to a file ("scan photos elsewhere/link.jpg") is
    # that file, which another root may list under its own name.
    linked = {os.path.abspath(r): os.path.realpath(r) for r in map(os.fspath, settings.roots)
              if os.path.islink(r) and os.path.isfile(r)}
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
        where = os.path.abspath(item.path)
        entries.setdefault(linked.get(where, where), item)
        found += 1
        if found % 500 == 0:
            progress(Progress("walk", found))
    progress(Progress("walk", len(entries), len(entries)))
    return list(entries.values()), errors


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
    partial: bool = False,
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

    ``partial`` also pairs partial copies (an off-centre or square crop, a
    picture inside a screenshot or a collage; :mod:`dupfinder.partial`, which
    needs ``pip install 'dupfinder[partial]'``): the member's transform says
    ``crop`` or ``contained`` and its ``box`` where.

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
    check_arguments(cache=cache, workers=workers, executor=executor, progress=progress)
    progress = progress or _noop
    hash_size = whole_number("hash_size", hash_size)
    threshold = default_threshold(algorithm, hash_size) if threshold is None else whole_number("threshold", threshold)
    if not (new_since is None or new_since == "last" or (isinstance(new_since, numbers.Real)
                                                          and not isinstance(new_since, bool))):
        msg = f"new_since must be a Unix time or 'last', not {new_since!r}"
        raise UsageError(msg)
    settings = ScanSettings(
        roots=roots_of(paths),
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
        partial=partial,
    )
    validate_settings(settings)
    if partial:  # before anything is walked or cached: say at once what is missing
        from .partial import require_opencv

        require_opencv()
    if new_since is not None and cache is None:
        msg = "--new-since needs the cache (it remembers when each file was first seen)"
        raise UsageError(msg)
    key_for = keep_rule(keep)
    spec = HashSpec(algorithm=algorithm, hash_size=hash_size, compat=compat, orient=orient)

    scan_id = None
    if cache is not None:
        scan_id = cache.start_scan(settings.roots, _settings_dict(settings))
        if new_since == "last":
            new_since = cache.last_completed_scan(settings.roots, before=scan_id)
            if new_since is None:
                new_since = 0.0  # no earlier scan: everything is new

    entries, errors = walk_entries(settings, progress)
    if partial:
        from .partial_votes import MAX_FILES

        if len(entries) >= MAX_FILES:  # say so now, not after hours of hashing
            msg = (f"--partial matches up to {MAX_FILES - 1} files at once and this tree has {len(entries)}; "
                   "scan its folders in parts, or without --partial")
            raise UsageError(msg)
    own_executor = executor is None
    if executor is None:
        executor = make_executor(workers, jobs=len(entries))
    hasher = Hasher(
        spec, cache=cache, executor=executor, workers=worker_count(executor),
        progress=progress, roots=settings.roots, features=partial,
    )
    try:
        files = collect(hasher.run(entries), errors, capacity=len(entries))
        found, entries = len(entries), None  # the table has what grouping needs: let the walk's list go
        links = None
        if partial:
            from .partial_scan import partial_links

            links = partial_links(files, executor=executor, orient=orient, progress=progress, errors=errors,
                                  cache=cache, ready=hasher.features)
    finally:
        if own_executor:
            executor.close()

    errors.sort(key=lambda e: (e.path, e.stage))
    progress(Progress("group", 0, 1))
    groups = group_files(
        files, threshold, index=index, key=key_for, transforms=transforms,
        ignored=cache.ignored_pairs() if cache is not None else frozenset(),
        links=links,
    )
    if new_since is not None:
        # Only members can be new: a million-file tree need not be looked up.
        added = cache.added_at(os.path.abspath(m.path) for g in groups for m in g.members)
        groups = only_new(groups, lambda p: added.get(os.path.abspath(p), float("inf")) > new_since)
    progress(Progress("group", 1, 1))
    if cache is not None:
        if prune:
            cache.prune(under=[os.path.abspath(r) for r in settings.roots])
        cache.finish_scan(scan_id)
    return ScanResult(
        settings=ScanSettings(**{**_settings_fields(settings), "new_since": new_since}),
        files=files,
        groups=groups,
        errors=tuple(errors),
        elapsed=time.monotonic() - started,
        counts={
            "found": found,
            "hashed": len(files),
            "decoded": hasher.decoded,
            "cached": hasher.cached,
            "errors": len(errors),
            "low_information": int(files.low_information.sum()),
            "groups": len(groups),
            "duplicates": sum(len(g) - 1 for g in groups),
        },
    )


def _settings_fields(settings: ScanSettings) -> dict:
    return {name: getattr(settings, name) for name in ScanSettings.__dataclass_fields__}


def _settings_dict(settings: ScanSettings) -> dict:
    d = _settings_fields(settings)
    d.pop("new_since", None)
    if not d.get("partial"):
        d.pop("partial", None)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def collect(items: Iterable[HashedFile | ScanError], errors: list[ScanError], *, capacity: int = 1024) -> FileTable:
    """The hashed files of a stream as a path-sorted FileTable; its errors go to ``errors``.

    >>> errs = []
    >>> t = collect([HashedFile("b", 1, 0, 64, 64, "00000000000000ff"), ScanError("c", "open", "gone")], errs)
    >>> len(t), [e.path for e in errs]
    (1, ['c'])
    """
    builder = TableBuilder(capacity=capacity)
    for item in items:
        if isinstance(item, ScanError):
            errors.append(item)
        else:
            builder.add(item)
    return builder.finish()


def group_files(
    files: FileTable, threshold: int, *, index: str = "auto", key=keep_key, transforms: bool = True,
    ignored=frozenset(), links=None,
):
    """Group a FileTable as ``scan`` does: its hashes, orientations and extra hashes.

    >>> t = collect([HashedFile(p, 1, 0, 64, 64, h) for p, h in (("a", "00000000000000ff"),
    ...                                                        ("b", "00000000000000fe"))], [])
    >>> [[m.path for m in g.members] for g in group_files(t, 2)]
    [['a', 'b']]
    """
    variants, extras = (files.variants, files.extras) if transforms else (None, None)
    return build_groups(
        files, files.words, threshold, method=index, key=key, ignored=ignored,
        variants=variants, transform_names=TRANSFORMS, extras=extras if variants is not None else None,
        links=links,
    )


def default_threshold(algorithm: str, hash_size: int) -> int:
    """The threshold used when none is given: 5 bits per 64, and PDQ's own 31.

    >>> default_threshold("phash", 8), default_threshold("phash", 16), default_threshold("pdq", 8)
    (5, 20, 31)
    """
    if algorithm == "pdq":
        return 31
    return round(5 * hash_size * hash_size / 64)
