"""Partial matching in the worker pool: the features shared through a memory-mapped table.

The parent writes the features once to a temporary folder as a
:class:`~dupfinder.partial_table.FeatureTable`; the workers memory-map it
(the page cache holds one copy for all), and tasks name files by index, so
no features are pickled. The candidate search goes one word position per
task (:meth:`SharedFeatures.votes`), verification a batch of candidate pairs
per task (:meth:`SharedFeatures.verify`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial as bind

import numpy as np

from .partial_features import Features, PartialMatch
from .partial_table import FeatureTable
from .partial_verify import verify
from .partial_votes import N_POSITIONS, merge_votes, votes_at

__all__ = ["VERIFY_BATCH", "POOL_MIN_CANDIDATES", "POOL_MIN_KEYPOINTS", "SharedFeatures", "shared", "verify_task"]

# Candidate pairs per verification task; the fewest candidates, and the
# fewest keypoints over all files, worth a pool (below, writing the table
# and starting the tasks cost more than they save).
VERIFY_BATCH = 64
POOL_MIN_CANDIDATES = 256
POOL_MIN_KEYPOINTS = 50_000


def verify_task(features, task) -> PartialMatch | None:
    """:func:`~dupfinder.partial_verify.verify` one task ``(x, y, mirrored, kx, ky, a, b)``: y against x."""
    x, y, mirrored, kx, ky, a, b = task
    fx, fy = features[x], features[y]
    if fx is None or fy is None:
        return None
    return verify(fx, fy, mirrored=mirrored, a=a, b=b, hint=(kx, ky))


def workers(executor) -> int:
    """How many processes an executor runs work in (0 for none given)."""
    return 0 if executor is None else getattr(executor, "workers", 1)


class SharedFeatures:
    """Features written where an executor's workers read them: votes and verification run there."""

    def __init__(self, executor, folder: str):
        self._executor = executor
        self._folder = folder

    def votes(self) -> tuple[np.ndarray, ...]:
        """:func:`~dupfinder.partial_votes.vote_matches` of the files among themselves, a position per task.

        A position whose worker died is counted again in this process.
        """
        parts = []
        work = bind(_vote_task, folder=self._folder)
        for position, result in self._executor.map_unordered(work, range(N_POSITIONS)):
            parts.append(result if isinstance(result, tuple) else work(position))
        return merge_votes(parts)

    def verify(self, batches: Iterable[tuple[object, list]]) -> Iterator[tuple[tuple[object, list], list]]:
        """``((key, tasks), results)`` for each batch ``(key, tasks)`` (tasks as for :func:`verify_task`).

        Batches are drawn as workers free up, so a lazy iterable can use
        what earlier results said. A batch whose worker died verifies
        nothing (all None): its pairs are simply not matched.
        """
        work = bind(_verify_batch, folder=self._folder)
        for batch, result in self._executor.map_unordered(work, batches):
            yield batch, result if isinstance(result, list) else [None] * len(batch[1])


@contextmanager
def shared(features: Sequence[Features | None], executor):
    """:class:`SharedFeatures` for ``executor``'s workers, the folder removed on exit.

    >>> from dupfinder.executor import ProcessExecutor
    >>> from dupfinder.partial_features import image_features
    >>> from PIL import Image
    >>> art = Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100)
    >>> fs = [image_features(art), image_features(art.crop((40, 30, 300, 230)))]
    >>> ex = ProcessExecutor(2)
    >>> with shared(fs, ex) as pool:
    ...     i, j, m, ki, kj = pool.votes()
    ...     ((_, tasks), (match,)), = pool.verify([("key", [(0, 1, False, ki, kj, 0, 1)])])
    >>> ex.close()
    >>> match.kind, match.mirrored
    ('crop', False)
    """
    with tempfile.TemporaryDirectory(prefix="dupfinder-partial-") as folder:
        FeatureTable.pack(features).save(folder)
        yield SharedFeatures(executor, folder)


_TABLES: dict[str, FeatureTable] = {}


def _table(folder: str) -> FeatureTable:
    if folder not in _TABLES:
        _TABLES.clear()  # one table at a time: an earlier scan's is gone
        _TABLES[folder] = FeatureTable.load(folder)
    return _TABLES[folder]


def _vote_task(position: int, *, folder: str) -> tuple[np.ndarray, ...]:
    """The work of one worker: the votes through one word position, the files against their mirrors."""
    table = _table(folder)
    owner = np.repeat(np.arange(len(table)), np.diff(table.offsets))
    point = np.arange(len(owner)) - table.offsets[owner]
    return votes_at((table.descriptors, owner, point), [(table.mirrored, owner, point, True)], position, within=True)


def _verify_batch(batch: tuple[object, list], *, folder: str) -> list[PartialMatch | None]:
    """The work of one worker: verify a batch of tasks against the table."""
    table = _table(folder)
    return [verify_task(table, t) for t in batch[1]]
