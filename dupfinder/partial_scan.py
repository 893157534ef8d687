"""What ``scan --partial`` adds after hashing: each content's local features, once, and the partial copies they verify.

A library keeps many byte-for-byte copies, and a nightly scan sees mostly
files it saw the night before, so features are computed once per content
and, with a cache, once per content ever:

- a copy answers as the first file with its bytes (:class:`~dupfinder.partial.SameBytes`);
  if that file fails (it vanished or changed since it was hashed), the next
  copy stands in;
- features stored in the cache for a content are read back; the others are
  taken from the hashing pass where its decode served them, or computed in
  the worker pool, and stored.

:func:`partial_links` is what :func:`dupfinder.scan` calls.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .executor import worker_count
from .filetable import FileTable, low_information_mask
from .models import Progress
from .partial_store import StoredFeatures

__all__ = ["features_once", "partial_links"]


def partial_links(files: FileTable, *, executor, orient: bool, progress, errors: list,
                  cache=None, ready: dict | None = None):
    """``(i, j) -> (what file j is to file i, box)`` for the verified partial copies among ``files`` (a lazy Mapping).

    See :func:`features_once` for the other arguments; a file whose
    features fail goes to ``errors`` (stage ``partial``).

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from dupfinder import scan
    >>> from dupfinder.executor import InlineExecutor
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> art = Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100)
    >>> art.save(d / "art.png"); art.crop((40, 30, 300, 230)).save(d / "part.png")
    >>> files = scan([d], workers=0).files
    >>> links = partial_links(files, executor=InlineExecutor(), orient=True, progress=None, errors=[])
    >>> links[0, 1][0]
    'crop'
    """
    from .partial import SameBytes, partial_relations

    features, first = features_once(files, executor=executor, orient=orient, progress=progress,
                                    errors=errors, cache=cache, ready=ready)
    links = partial_relations(features, executor=executor, progress=progress)
    return SameBytes(links, first) if (first != np.arange(len(first))).any() else links


def features_once(files: FileTable, *, executor, orient: bool, progress, errors: list,
                  cache=None, ready: dict | None = None) -> tuple[list, np.ndarray]:
    """Local features of each file, and for each file the first file with the same bytes.

    Features are None for blank, flat or tiny files (they match only
    identical files) and for byte-for-byte copies of an earlier file. A file
    whose features fail goes to ``errors`` (stage ``partial``). ``cache``
    (a :class:`dupfinder.cache.Cache`) gives and keeps features by content;
    ``ready`` holds the features the hashing pass computed from its own
    decode, by content digest. ``progress`` (or None) gets stage
    ``features`` for the files computed here.
    """
    from .partial import Features, features_for

    stored = StoredFeatures(cache, orient=orient)

    def keep(i: int, f) -> None:
        if cache is not None:  # a row costs its hash's hex: only to store
            stored.put(files.brief(i), f)

    first, later, distinct = _first_copies(files)
    features: list = [None] * len(files)
    todo = []
    for i in distinct:
        digest = files.digest[i].tobytes() if files.has_digest[i] else None
        features[i] = stored.get(files.paths[i], digest)
        if features[i] is None and ready and digest in ready:
            features[i] = dataclasses.replace(ready[digest], path=files.paths[i])
            keep(i, features[i])
        if features[i] is None:
            todo.append(i)
    base = 0  # files computed in earlier rounds: one bar for all of them

    def report(p: Progress) -> None:
        if progress is not None:
            progress(Progress(p.stage, base + p.done, base + (p.total or 0)))

    while todo:
        found = features_for([files.paths[i] for i in todo], executor=executor,
                             workers=worker_count(executor), orient=orient, progress=report)
        retry = []
        for i, f in zip(todo, found):
            if isinstance(f, Features):
                features[i] = f
                keep(i, f)
                continue
            if f is not None:
                errors.append(f)
            rest = later.pop(i, [])
            if rest:  # the next copy stands in for the content; the failed file keeps no matches
                first[rest] = rest[0]
                later[rest[0]] = rest[1:]
                retry.append(rest[0])
        base += len(todo)
        todo = retry
    stored.close()
    return features, first


def _first_copies(files: FileTable) -> tuple[np.ndarray, dict[int, list[int]], list[int]]:
    """``(first, later, distinct)``: each file's first file with its bytes, each first file's later copies, the first files that want features.

    Low-information files want none and are their own first.

    >>> from dupfinder.filetable import FileTable
    >>> from dupfinder.models import HashedFile
    >>> rows = [HashedFile(p, 1, 1, 64, 64, "c4001b0065008c00", d, quality=80)
    ...         for p, d in [("a", "01" * 16), ("b", "02" * 16), ("c", "01" * 16)]]
    >>> first, later, distinct = _first_copies(FileTable.from_records(rows))
    >>> first.tolist(), later, distinct
    ([0, 1, 0], {0: [2]}, [0, 1])
    """
    first = np.arange(len(files))
    copies: dict[bytes, list[int]] = {}
    distinct = []
    for i in np.flatnonzero(~low_information_mask(files)).tolist():
        if files.has_digest[i]:
            group = copies.setdefault(files.digest[i].tobytes(), [i])
            first[i] = group[0]
            if group[0] != i:
                group.append(i)
                continue
        distinct.append(i)
    later = {group[0]: group[1:] for group in copies.values() if len(group) > 1}
    return first, later, distinct
