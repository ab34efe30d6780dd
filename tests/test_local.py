"""The local runner's supervisor: a process that keeps dying is restarted with a growing pause, and says so."""

from __future__ import annotations

import signal
import sys

from resizer.local import MAX_RESTART_DELAY, STABLE_AFTER, Proc, Stack

CRASH = [sys.executable, "-c", "raise SystemExit(1)"]
STAY_UP = [sys.executable, "-c", "import time; time.sleep(600)"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def dies_and_is_rescheduled(stack: Stack, proc: Proc) -> float:
    """Wait for the process to exit, let the supervisor see it; the pause it chose."""
    proc.popen.wait(timeout=30)
    stack.supervise_once()
    assert proc.restart_at is not None, "the supervisor did not notice the exit"
    return proc.restart_at - stack.clock()


def test_a_crashing_process_is_restarted_with_a_doubling_pause_up_to_a_bound(tmp_path, capsys):
    clock = FakeClock()
    stack = Stack(workdir=tmp_path, log_dir=tmp_path / "logs", clock=clock)
    proc = stack.spawn(Proc("worker-1", CRASH, {}, restart=True))
    try:
        delays = []
        for _ in range(9):
            delay = dies_and_is_rescheduled(stack, proc)
            delays.append(delay)
            restarts = proc.restarts
            clock.now += delay - 0.01
            stack.supervise_once()
            assert proc.restarts == restarts, "restarted before its pause was over"
            clock.now += 0.01
            stack.supervise_once()
            assert proc.restarts == restarts + 1
        assert delays == [0.5, 1, 2, 4, 8, 16, MAX_RESTART_DELAY, MAX_RESTART_DELAY, MAX_RESTART_DELAY]
        log = capsys.readouterr().out
        assert "worker-1 exited with code 1; restarting in 4 s (restart #4)" in log
        assert "worker-1 exited with code 1; restarting in 30 s (restart #9)" in log

        # A process that stayed up a while and then died starts a new series: a quick restart.
        proc.argv = STAY_UP
        clock.now += dies_and_is_rescheduled(stack, proc)
        stack.supervise_once()
        assert proc.alive()
        clock.now += STABLE_AFTER
        stack.kill("worker-1", signal.SIGKILL)
        assert dies_and_is_rescheduled(stack, proc) == 0.5
        assert "worker-1 exited with code -9; restarting in 0.5 s" in capsys.readouterr().out
    finally:
        stack.stop()


def test_a_clean_exit_is_restarted_quickly_every_time(tmp_path):
    """A worker recycled after WORKER_MAX_JOBS exits 0: that is not a crash, and never backs off."""
    clock = FakeClock()
    stack = Stack(workdir=tmp_path, log_dir=tmp_path / "logs", clock=clock)
    proc = stack.spawn(Proc("worker-1", [sys.executable, "-c", "pass"], {}, restart=True))
    try:
        for _ in range(4):
            assert dies_and_is_rescheduled(stack, proc) == 0.5
            clock.now += 0.5
            stack.supervise_once()
    finally:
        stack.stop()
