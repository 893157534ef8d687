"""Targets against references in the worker processes: what ``match --partial`` does per target.

The references' features are written once per run to a temporary folder,
with their words at each position already sorted
(:func:`~dupfinder.partial_votes.sorted_words_at`), and the workers
memory-map them. A task is a batch of target paths: the worker computes
their features, looks their words up in the references', verifies the
candidates and sends back only the matches. No target's features cross
between processes or outlive its batch, and the references' words are
sorted once, not once per chunk of targets.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial as bind

import numpy as np

from .models import ScanError
from .partial_features import (
    Features,
    PartialMatch,
    file_features,
    partial_error,
)
from .partial_table import FeatureTable, mapped, writing_to
from .partial_verify import best_matches, verify
from .partial_votes import (
    MIN_VOTES,
    N_POSITIONS,
    grouped,
    merge_votes,
    sorted_words_at,
    stacked,
    votes_at,
)

__all__ = ["References", "references"]


class References:
    """References written for an executor's workers: :meth:`match` finds which of them targets copy in part.

    Made by :func:`references`, whose example shows it at work.
    """

    def __init__(self, executor, folder: str, *, orient: bool):
        self._executor = executor
        self._folder = folder
        self._orient = orient

    def match(self, paths: Sequence[str], *, workers: int = 1,
              known: Callable[[str], Features | None] | None = None,
              computed: Callable[[str, Features], None] | None = None,
              ) -> Iterator[tuple[str, list[PartialMatch] | ScanError]]:
        """``(path, matches)`` for each target with a partial match: ``a`` a reference's index, ``b`` the path.

        ``paths`` should be distinct. ``known(path)``, if given, returns a
        target's features when they are at hand (the cache, the hashing
        decode), else None: it is asked a batch at a time as the batch is
        sent, so only the batches in flight hold features. The workers
        compute the others, and hand them to ``computed(path, features)``
        if given (to keep them). A target whose features must be computed
        and that cannot be read now (it vanished or changed since it was
        hashed), or whose worker process died (tried again alone), comes
        with a ScanError (stage ``partial``) instead of matches.
        """
        from .executor import WorkerCrashed, map_retrying
        from .hashing import in_batches

        work = bind(_match_batch, folder=self._folder, orient=self._orient, keep=computed is not None)
        batches = ([(p, known(p) if known is not None else None) for p in batch]
                   for batch in in_batches(paths, workers))
        for batch, result in map_retrying(self._executor, work, batches):
            if isinstance(result, WorkerCrashed):
                yield batch[0][0], ScanError(batch[0][0], "partial", CRASHED)
                continue
            found, new = result
            for path, features in new:
                computed(path, features)
            yield from found


CRASHED = "the worker process died matching this file's local features against the references (--partial)"


@contextmanager
def references(features: Sequence[Features | None], *, executor, orient: bool = True):
    """:class:`References` of ``features`` (None for a reference without), the folder removed on exit.

    The list of features can go once this has written it (if the caller
    keeps no name for it): the folder has them.

    >>> import os, tempfile
    >>> from PIL import Image
    >>> from dupfinder.executor import InlineExecutor
    >>> from dupfinder.partial_features import image_features
    >>> art = Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     target = os.path.join(tmp, "part.png")
    ...     art.crop((40, 30, 300, 230)).save(target)
    ...     with references([None, image_features(art)], executor=InlineExecutor()) as refs:
    ...         [(m.a, m.b == target, m.kind) for _, found in refs.match([target]) for m in found]
    [(1, True, 'crop')]
    """
    table = FeatureTable.pack(features)
    del features  # the caller's list can go: the folder has it
    with tempfile.TemporaryDirectory(prefix="dupfinder-references-", ignore_cleanup_errors=True) as folder:
        with writing_to(folder):
            table.save(folder)
            for position in range(N_POSITIONS):
                order, words = sorted_words_at(table.descriptors, position)
                if len(order) < 2**31:  # half the bytes: 8 positions of it outweigh the descriptors
                    order = order.astype(np.int32)
                np.save(os.path.join(folder, f"order{position}.npy"), order)
                np.save(os.path.join(folder, f"words{position}.npy"), words)
        del table
        try:
            yield References(executor, folder, orient=orient)
        finally:
            _OPEN.pop(folder, None)  # this process's maps of it (an in-process executor's)


_OPEN: dict[str, tuple] = {}


def _open(folder: str) -> tuple:
    """The references in ``folder``: table, (descriptors, owner, point), and each position's sorted words."""
    if folder not in _OPEN:
        # One run's references at a time: a worker lets the last run's go
        # (and its deleted files' space) when the next run's first batch comes.
        _OPEN.clear()
        table = FeatureTable.load(folder)
        index = [tuple(mapped(os.path.join(folder, f"{name}{p}.npy")) for name in ("order", "words"))
                 for p in range(N_POSITIONS)]
        _OPEN[folder] = (table, (table.descriptors, *table.owners()), index)
    return _OPEN[folder]


def _match_batch(targets: Sequence[tuple[str, Features | None]], *, folder: str, orient: bool, keep: bool = False,
                 ) -> tuple[list[tuple[str, list[PartialMatch] | ScanError]], list[tuple[str, Features]]]:
    """The work of one worker: features of a batch of targets, their candidates and verified matches.

    Returns the targets with matches (or errors), and with ``keep`` the
    features computed here.
    """
    table, db, index = _open(folder)
    ready, failed, new = [], [], []
    for path, f in targets:
        if f is None:
            f = file_features(path, orient=orient)
            if isinstance(f, ScanError):  # hashed a moment ago: it vanished or changed since
                failed.append((path, partial_error(f)))
                continue
            if keep:
                new.append((path, f))
        if len(f):
            ready.append((path, f))
    if not ready:
        return failed, new
    features = [f for _, f in ready]
    probes = [(*stacked(features, mirrored=False), False), (*stacked(features, mirrored=True), True)]
    votes = merge_votes(votes_at(db, probes, p, within=False, index=index[p]) for p in range(N_POSITIONS))
    # i is a target, j a reference: how the target relates to the reference.
    candidates = list(grouped(votes, MIN_VOTES))
    found = [verify(table[j], ready[i][1], mirrored=m, a=j, b=ready[i][0], hint=(kj, ki))
             for i, j, m, ki, kj in candidates]
    by_target: dict[str, list[PartialMatch]] = {}
    for match in best_matches(candidates, found):
        by_target.setdefault(match.b, []).append(match)
    return failed + list(by_target.items()), new
