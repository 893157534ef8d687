"""Partial matching in the worker pool: the features shared through a memory-mapped table.

The parent writes the features once to a temporary folder as a
:class:`~dupfinder.partial_table.FeatureTable`; the workers memory-map it
(the page cache holds one copy for all), and tasks name files by index, so
no features are pickled. The candidate search goes one word position per
task (:meth:`SharedFeatures.votes`), verification a batch of candidate pairs
per task (:meth:`SharedFeatures.verify`).

A worker keeps the table it last read mapped until it reads another or the
pool closes; on Linux that holds the deleted folder's disk space until then.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial as bind
from typing import NamedTuple

import numpy as np

from .executor import WorkerCrashed
from .partial_features import Features, PartialMatch
from .partial_table import FeatureTable, writing_to
from .partial_verify import verify
from .partial_votes import N_POSITIONS, merge_votes, votes_at

__all__ = ["POOL_MIN_CANDIDATES", "POOL_MIN_KEYPOINTS", "VERIFY_BATCH", "SharedFeatures", "Task", "shared",
           "verify_task"]

# Candidate pairs per verification task; the fewest candidates, and the
# fewest keypoints over all files, worth a pool (below, writing the table
# and starting the tasks cost more than they save).
VERIFY_BATCH = 64
POOL_MIN_CANDIDATES = 256
POOL_MIN_KEYPOINTS = 50_000


class Task(NamedTuple):
    """One candidate to verify: is file ``y`` a partial copy of file ``x`` (``y`` mirrored if asked)?

    ``kx``, ``ky`` are the voting matches (keypoint indices of x and y);
    ``a``, ``b`` name x and y in the :class:`PartialMatch` returned.
    """

    x: int
    y: int
    mirrored: bool
    kx: np.ndarray
    ky: np.ndarray
    a: object
    b: object


def verify_task(features, task: Task) -> PartialMatch | None:
    """:func:`~dupfinder.partial_verify.verify` one task against ``features`` (a list or a table).

    >>> from PIL import Image
    >>> from dupfinder.partial_features import image_features
    >>> art = Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100)
    >>> fs = [image_features(art), image_features(art.crop((40, 30, 300, 230)))]
    >>> verify_task(fs, Task(0, 1, False, np.arange(0), np.arange(0), "art", "part")) is None  # no votes
    True
    """
    fx, fy = features[task.x], features[task.y]
    if fx is None or fy is None:
        return None
    return verify(fx, fy, mirrored=task.mirrored, a=task.a, b=task.b, hint=(task.kx, task.ky))


class SharedFeatures:
    """Features written where an executor's workers read them: votes and verification run there."""

    def __init__(self, executor, folder: str):
        self._executor = executor
        self._folder = folder

    def votes(self) -> tuple[np.ndarray, ...]:
        """:func:`~dupfinder.partial_votes.vote_matches` of the files among themselves, a position per task.

        A position whose worker died is counted again in this process.
        """
        work = bind(_vote_task, folder=self._folder)

        def parts():
            for position, result in self._executor.map_unordered(work, range(N_POSITIONS)):
                if isinstance(result, WorkerCrashed):
                    result = _vote_task(position, folder=self._folder, keep=False)
                yield result

        return merge_votes(parts())

    def verify(self, batches: Iterable[tuple[object, list[Task]]]) -> Iterator[tuple[tuple, list | None]]:
        """``((key, tasks), results)`` for each batch ``(key, tasks)``; results None if its worker died.

        Batches are drawn as workers free up, so a lazy iterable can use
        what earlier results said. Close the iterator if you stop early
        (``contextlib.closing``): that cancels the batches in flight.
        """
        work = bind(_verify_batch, folder=self._folder)
        for batch, result in self._executor.map_unordered(work, batches):
            yield batch, None if isinstance(result, WorkerCrashed) else result


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
    ...     ((_, tasks), (match,)), = pool.verify([("key", [Task(0, 1, False, ki, kj, 0, 1)])])
    >>> ex.close()
    >>> match.kind, match.mirrored
    ('crop', False)
    """
    # ignore_cleanup_errors: where a mapped file cannot be deleted (Windows),
    # a worker still holding it must not turn a finished scan into an error.
    with tempfile.TemporaryDirectory(prefix="dupfinder-partial-", ignore_cleanup_errors=True) as folder:
        with writing_to(folder):
            FeatureTable.pack(features).save(folder)
        yield SharedFeatures(executor, folder)


_TABLES: dict[str, FeatureTable] = {}


def _table(folder: str, *, keep: bool = True) -> FeatureTable:
    """The table in ``folder``; a worker keeps the last one it read (``keep``) for its next task."""
    if folder in _TABLES:
        return _TABLES[folder]
    table = FeatureTable.load(folder)
    if keep:
        _TABLES.clear()  # one table at a time: an earlier job's is gone
        _TABLES[folder] = table
    return table


def _vote_task(position: int, *, folder: str, keep: bool = True) -> np.ndarray:
    """The work of one worker: the votes through one word position, the files against their mirrors (packed)."""
    table = _table(folder, keep=keep)
    owner, point = table.owners()
    return votes_at((table.descriptors, owner, point), [(table.mirrored, owner, point, True)], position, within=True)


def _verify_batch(batch: tuple[object, list[Task]], *, folder: str) -> list[PartialMatch | None]:
    """The work of one worker: verify a batch of tasks against the table."""
    table = _table(folder)
    return [verify_task(table, t) for t in batch[1]]
