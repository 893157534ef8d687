"""Run batches of work in-process or in a pool of worker processes.

The pipeline hands batches to an :class:`Executor` and reads results as they
finish; it knows nothing of processes. Another engine (Dask, a cluster) can
take the pool's place by implementing the same two methods.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol, TypeVar

__all__ = ["Executor", "InlineExecutor", "ProcessExecutor", "LazyExecutor", "WorkerCrashed", "make_executor",
           "map_retrying", "worker_count"]

T = TypeVar("T")
R = TypeVar("R")


class WorkerCrashed(RuntimeError):
    """A worker process died (a decoder crashed or the OS killed it) during a batch."""


class Executor(Protocol):
    """Maps a function over items and yields ``(item, result)`` as each finishes.

    ``result`` is the function's return value, or a :class:`WorkerCrashed`
    instance when the process running it died; ordinary exceptions raised by
    the function propagate.
    """

    def map_unordered(
        self, fn: Callable[[T], R], items: Iterable[T]
    ) -> Iterator[tuple[T, R | WorkerCrashed]]: ...

    def close(self) -> None: ...


class InlineExecutor:
    """Runs everything in the calling process, in order (``--workers 0``).

    >>> list(InlineExecutor().map_unordered(abs, [-1, 2]))
    [(-1, 1), (2, 2)]
    """

    def map_unordered(self, fn, items):
        for item in items:
            yield item, fn(item)

    def close(self) -> None:
        pass


def _ignore_sigint() -> None:
    # Ctrl-C reaches every process of the terminal's group; only the parent
    # should react, so that it can stop the pool cleanly and report.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits the parent's handlers: the CLI's SIGTERM one
    # turned the pool's terminate() of a broken pool into an exception the
    # worker tried to send back through a pipe nobody read (a hang at exit).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # A parent killed with SIGKILL (the OOM killer, `timeout -s KILL`) cannot
    # stop its pool: the workers would wait forever on a queue nobody feeds,
    # holding the cron job's output pipe open. They leave when it is gone.
    threading.Thread(target=_leave_with, args=(os.getppid(),), daemon=True, name="dupfinder-parent-watch").start()
    # Nor keep the cache's lock, which a forked worker inherits.
    from .cache import forget_inherited_locks

    forget_inherited_locks()


def _leave_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_WATCH_SECONDS)
    os._exit(1)


_WATCH_SECONDS = 0.5


class ProcessExecutor:
    """A pool of worker processes fed a few batches ahead of the results.

    At most ``2 * workers`` batches are in flight, so memory stays bounded
    however many files there are. A pool whose worker dies is replaced, and
    the batches that were in it come back as :class:`WorkerCrashed`.

    >>> ex = ProcessExecutor(1)
    >>> sorted(r for _, r in ex.map_unordered(abs, [-3, 4]))
    [3, 4]
    >>> ex.close()
    """

    def __init__(self, workers: int, *, start_method: str | None = None):
        self.workers = max(1, workers)
        self._context = multiprocessing.get_context(start_method)
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=self._context, initializer=_ignore_sigint
            )
        return self._pool

    def map_unordered(self, fn, items):
        items = iter(items)
        in_flight: dict[Future, object] = {}
        limit = 2 * self.workers
        try:
            exhausted = False
            while True:
                while not exhausted and len(in_flight) < limit:
                    try:
                        item = next(items)
                    except StopIteration:
                        exhausted = True
                        break
                    in_flight[self._submit(fn, item)] = item
                if not in_flight:
                    return
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    item = in_flight.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool as exc:
                        self._discard_pool()
                        result = WorkerCrashed(str(exc) or "a worker process died")
                    yield item, result
        finally:
            if in_flight:
                # Interrupted or abandoned: do not wait for work nobody reads.
                for future in in_flight:
                    future.cancel()
                self._discard_pool()

    def _submit(self, fn, item) -> Future:
        try:
            return self._get_pool().submit(fn, item)
        except BrokenProcessPool:
            self._discard_pool()
            return self._get_pool().submit(fn, item)

    def _discard_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def make_executor(workers: int | None, *, jobs: int) -> Executor:
    """Choose an executor: in-process for ``workers=0`` or tiny jobs, else a pool.

    ``workers=None`` means one per CPU. Fewer than 16 files are hashed
    in-process: starting processes would cost more than it saves.

    >>> type(make_executor(0, jobs=1000)).__name__, type(make_executor(None, jobs=3)).__name__
    ('InlineExecutor', 'InlineExecutor')
    >>> type(make_executor(2, jobs=1000)).__name__
    'LazyExecutor'
    """
    if workers is None:
        workers = os.cpu_count() or 1
        if jobs < 16:
            workers = 0
    workers = int(workers)  # numpy's integers too
    if workers <= 0:
        return InlineExecutor()
    return LazyExecutor(workers)


class LazyExecutor:
    """A process pool started only when work first arrives.

    A nightly re-scan of an unchanged tree decodes nothing: it should not
    pay for starting processes.

    >>> ex = LazyExecutor(2)
    >>> ex.started
    False
    >>> ex.close()
    """

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: ProcessExecutor | None = None

    @property
    def started(self) -> bool:
        return self._pool is not None

    def map_unordered(self, fn, items):
        items = iter(items)
        try:
            first = next(items)
        except StopIteration:
            return
        if self._pool is None:
            self._pool = ProcessExecutor(self.workers)
        yield from self._pool.map_unordered(fn, _chain_first(first, items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def worker_count(executor) -> int:
    """How many processes an executor runs work in (0 for none given).

    >>> worker_count(None), worker_count(InlineExecutor()), worker_count(LazyExecutor(2))
    (0, 1, 2)
    """
    return 0 if executor is None else getattr(executor, "workers", 1)


def map_retrying(executor: Executor, fn: Callable[[list], R], batches: Iterable[list]) -> Iterator[tuple[list, R | WorkerCrashed]]:
    """``executor.map_unordered`` over batches (lists), a batch whose worker died retried an item at a time.

    When a worker dies, the pool fails every batch in flight with it: each
    of their items is run again alone, so that a crash is one item's and
    no other's. Yields ``(batch, result)`` as they finish, and
    ``([item], WorkerCrashed)`` for an item whose worker died even alone.

    >>> list(map_retrying(InlineExecutor(), sum, [[1, 2], [3]]))
    [([1, 2], 3), ([3], 3)]
    """
    crashed = []
    for batch, result in executor.map_unordered(fn, batches):
        if isinstance(result, WorkerCrashed):
            crashed.extend(batch)
        else:
            yield batch, result
    # One at a time: with several in flight, the death of the pool would fail
    # its innocent neighbours too.
    for item in crashed:
        yield from executor.map_unordered(fn, [[item]])


def _chain_first(first, rest):
    yield first
    yield from rest
