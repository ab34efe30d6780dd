"""The worker's own Redis traffic: RQ's per-job bookkeeping without the round trips that buy nothing."""

from __future__ import annotations

import pytest
from rq import Queue

from resizer import worker as worker_module
from resizer.worker import ResizeWorker


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(worker_module, "_monotonic", lambda: now[0])
    return now


@pytest.fixture
def worker(real_redis):
    w = ResizeWorker([Queue("t", connection=real_redis)], connection=real_redis, name="w1", worker_ttl=30)
    w.register_birth()
    yield w
    w.register_death()


def beat_of(real_redis, w) -> bytes:
    return real_redis.hget(w.key, "last_heartbeat")


def test_a_renewal_within_a_second_of_a_full_one_is_skipped(worker, real_redis, clock):
    worker.heartbeat()
    first = beat_of(real_redis, worker)
    real_redis.hset(worker.key, "last_heartbeat", "marker")
    clock[0] += 0.5
    worker.heartbeat()
    assert beat_of(real_redis, worker) == b"marker"  # not sent
    clock[0] += 0.6
    worker.heartbeat()
    assert beat_of(real_redis, worker) not in (b"marker", first)
    assert 60 < real_redis.ttl(worker.key) <= 90


def test_a_renewal_after_one_that_shortened_the_key_always_goes_out(worker, real_redis, clock):
    worker.heartbeat()
    with real_redis.pipeline() as pipe:  # as RQ does at a job's start: the job's own, short TTL
        worker.heartbeat(timeout=20, pipeline=pipe)
        pipe.execute()
    assert real_redis.ttl(worker.key) <= 20
    clock[0] += 0.1
    worker.heartbeat()
    assert real_redis.ttl(worker.key) > 60


def test_a_renewal_queued_on_a_pipeline_does_not_count(worker, real_redis, clock):
    """It may yet fail (its caller executes it): the next renewal must not be skipped because of it."""
    with real_redis.pipeline() as pipe:
        worker.heartbeat(pipeline=pipe)  # a full TTL, as in RQ's suspension check
        pipe.reset()  # never sent
    real_redis.hset(worker.key, "last_heartbeat", "marker")
    clock[0] += 0.1
    worker.heartbeat()
    assert beat_of(real_redis, worker) != b"marker"


def test_a_renewal_is_one_round_trip(worker, real_redis, clock, monkeypatch):
    sent = []
    original = type(real_redis).execute_command
    monkeypatch.setattr(type(real_redis), "execute_command",
                        lambda self, *args, **kw: sent.append(args[0]) or original(self, *args, **kw))
    pipes = []
    execute = type(real_redis.pipeline()).execute
    monkeypatch.setattr(type(real_redis.pipeline()), "execute",
                        lambda pipe, *a, **kw: pipes.append(len(pipe.command_stack)) or execute(pipe, *a, **kw))
    clock[0] += 5
    worker.heartbeat()
    assert sent == [] and pipes == [2]  # HSET and EXPIRE, sent together


def test_the_state_is_written_only_when_it_changes(worker, real_redis):
    worker.set_state("idle")
    real_redis.hset(worker.key, "state", "marker")
    worker.set_state("idle")
    assert real_redis.hget(worker.key, "state") == b"marker"
    worker.set_state("busy")
    assert real_redis.hget(worker.key, "state") == b"busy"
