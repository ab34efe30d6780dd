"""The local runner's supervisor: a process that keeps dying is restarted with a growing pause, and says so."""

from __future__ import annotations

import os
import signal
import sys

import pytest

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


def test_a_process_killed_within_ten_seconds_of_its_start_backs_off_and_one_that_ran_ten_starts_anew(tmp_path):
    """Docker's rule (its restart manager resets the delay once a container ran 10 s): a worker killed again and
    again, but each time after it ran 10 s, is restarted after 0.5 s every time, not after a pause that grows
    to 30 s while its jobs wait."""
    clock = FakeClock()
    stack = Stack(workdir=tmp_path, log_dir=tmp_path / "logs", clock=clock)
    proc = stack.spawn(Proc("worker-1", STAY_UP, {}, restart=True))
    try:
        delays = []
        for ran in (9.9, 9.9, 10.0, 10.0, 9.9):
            clock.now += ran
            stack.kill("worker-1", signal.SIGKILL)
            delays.append(dies_and_is_rescheduled(stack, proc))
            clock.now += delays[-1]
            stack.supervise_once()
            assert proc.alive()
        assert delays == [0.5, 1, 0.5, 0.5, 1]
    finally:
        stack.stop()


def test_workers_killed_at_random_every_few_seconds_stay_up_most_of_the_time(tmp_path):
    """The benchmark's soak, on the supervisor alone (a fake clock, real processes): a live worker of four is
    SIGKILLed every 3-8 s for 10 minutes. Restarted after a pause that resets once a worker ran 10 s, the four
    are up most of the time; with a series that only a minute's run reset, the pauses grew to 30 s, most
    workers sat them out, and the soak's jobs stalled."""
    import random

    clock = FakeClock()
    stack = Stack(workdir=tmp_path, log_dir=tmp_path / "logs", clock=clock)
    names = [f"worker-{i}" for i in range(1, 5)]
    for name in names:
        stack.spawn(Proc(name, STAY_UP, {}, restart=True))
    rnd, up, end, step = random.Random(7), 0.0, clock.now + 600, 0.5
    next_kill = clock.now + rnd.uniform(3, 8)
    try:
        while clock.now < end:
            if clock.now >= next_kill:
                name = rnd.choice(names)
                if stack.procs[name].alive():
                    stack.kill(name, signal.SIGKILL)
                    stack.procs[name].popen.wait(timeout=30)
                next_kill = clock.now + rnd.uniform(3, 8)
            stack.supervise_once()
            up += step * sum(stack.procs[name].alive() for name in names)
            clock.now += step
        assert sum(stack.procs[name].restarts for name in names) > 50  # the killer did its part
        assert up / (600 * len(names)) > 0.8
    finally:
        stack.stop()


def test_a_clean_exit_is_restarted_quickly_every_time(tmp_path):
    """A worker recycled (past WORKER_MAX_RSS_MB or WORKER_MAX_JOBS) exits 0: not a crash, and never backs off."""
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


def test_its_own_redis_keeps_an_aof_and_rewrites_it_only_past_the_size_compose_uses(tmp_path):
    """make run's Redis is the benchmark's: it must rewrite its AOF as rarely as production's (compose) does."""
    import redis
    import yaml

    from resizer.local import REDIS_AOF_REWRITE, ROOT

    stack = Stack(workdir=tmp_path, own_redis=True, redis_persistence="always", env={"REDIS_URL": ""},
                  log_dir=tmp_path / "logs")
    try:
        stack._start_redis()
        client = redis.Redis.from_url(stack.env["REDIS_URL"])
        config = client.config_get("auto-aof-rewrite-min-size") | client.config_get("appendonly")
        client.close()
    finally:
        stack.stop()
    assert config == {"auto-aof-rewrite-min-size": str(1 << 30), "appendonly": "yes"}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis"]["command"]
    at = compose.index(REDIS_AOF_REWRITE[0])
    assert tuple(compose[at:at + 2]) == REDIS_AOF_REWRITE


@pytest.mark.e2e
def test_its_s3_server_runs_go_on_one_core_unless_the_environment_says_otherwise(tmp_path, monkeypatch):
    """rclone (Go) shares the box with the resize workers: one core for its runtime, so no idle Go thread spins on
    theirs; a GOMAXPROCS the operator exported is kept (an empty one is Go's "unset")."""
    from pathlib import Path

    from resizer.local import find_binary, free_port

    stack = Stack(workdir=tmp_path, s3_port=free_port(), env={"S3_ENDPOINT_URL": ""}, log_dir=tmp_path / "logs")
    try:
        stack._start_s3()
        environ = Path(f"/proc/{stack.procs['s3'].pid}/environ").read_bytes().split(b"\0")
    finally:
        stack.stop()
    assert b"GOMAXPROCS=1" in environ
    rclone, keys = find_binary("rclone"), {"S3_ACCESS_KEY_ID": "a", "S3_SECRET_ACCESS_KEY": "b"}
    for exported, runs_with in (("2", "2"), ("", "1")):
        monkeypatch.setenv("GOMAXPROCS", exported)
        told = Stack(workdir=tmp_path, env=dict(keys))
        told.env = {**os.environ, **told.env}  # what start() gives every process
        assert told.s3_proc(rclone, tmp_path).env["GOMAXPROCS"] == runs_with
