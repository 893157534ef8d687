"""The worker pool: crashed batches retried an item at a time, workers' signals, the CLI's Ctrl-C status."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from dupfinder.executor import ProcessExecutor, WorkerCrashed, map_retrying

_PARENT = os.getpid()


def _total_or_die(batch):
    # Kills its worker process on any batch holding 13.
    if 13 in batch and os.getpid() != _PARENT:
        os._exit(1)
    return sum(batch)


def test_a_batch_whose_worker_died_is_retried_one_item_at_a_time():
    executor = ProcessExecutor(2)
    try:
        got = list(map_retrying(executor, _total_or_die, [[1, 2], [13, 4], [5], [6, 7]]))
    finally:
        executor.close()
    answers = {tuple(batch): result for batch, result in got}
    # 13 alone still kills its worker; 4 (its neighbour) and the others are answered.
    assert isinstance(answers.pop((13,)), WorkerCrashed)
    assert answers[(4,)] == 4
    done = sorted(x for batch, result in got if not isinstance(result, WorkerCrashed) for x in batch)
    assert done == [1, 2, 4, 5, 6, 7]


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGTERM handler to inherit")
def test_workers_do_not_keep_the_parents_sigterm_handler():
    # A worker with the CLI's handler raised on the pool's terminate() and could hang the exit.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    executor = ProcessExecutor(1)
    try:
        ((_, handler),) = list(executor.map_unordered(_sigterm_handler_name, [None]))
    finally:
        executor.close()
        signal.signal(signal.SIGTERM, previous)
    assert handler == "SIG_DFL"


def _sigterm_handler_name(_):
    return signal.getsignal(signal.SIGTERM).name


@pytest.mark.skipif(sys.implementation.name != "cpython" or sys.platform == "win32", reason="a CPython quirk, POSIX exit")
@pytest.mark.parametrize("forget", [False, True])
def test_a_handled_ctrl_c_exits_with_our_status_not_by_sigint(forget, tmp_path):
    # A KeyboardInterrupt inside code run through PyRun_String (as some
    # extension loaders do) leaves CPython sure it went unhandled: at the exit
    # of `python -m dupfinder` it kills itself with SIGINT (status -2, not 130).
    # The CLI clears that note when it handles one.
    import subprocess

    (tmp_path / "quirk").mkdir()
    (tmp_path / "quirk" / "__main__.py").write_text(
        "import ctypes, sys\n"
        "ctypes.pythonapi.PyRun_SimpleString(b'raise KeyboardInterrupt')\n"
        + ("from dupfinder.cli import _forget_unhandled_interrupt\n_forget_unhandled_interrupt()\n" if forget else "")
        + "sys.exit(130)\n")
    done = subprocess.run([sys.executable, "-m", "quirk"], capture_output=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])})
    assert done.returncode == (130 if forget else -signal.SIGINT)
