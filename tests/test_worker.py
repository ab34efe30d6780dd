"""The worker's own Redis traffic: RQ's per-job bookkeeping without the round trips that buy nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rq import Queue

from resizer import worker as worker_module
from resizer.worker import ResizeWorker

ROOT = Path(__file__).resolve().parent.parent


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


# -- a whole job ----------------------------------------------------------------------------------------------
TRIPS: list[tuple] = []  # what the worker sent, one entry per round trip
RAN: list[int] = []  # len(TRIPS) when each job ran
AT_DEQUEUE: list[tuple] = []  # the worker's state and its key's TTL in Redis when it dequeues
TTL_IN_JOB: list[int] = []  # the running job's key's TTL, seen from inside the job


def record_run(suspend: bool = False, fail: bool = False, probe_ttl: bool = False, follower: bool = False) -> None:
    RAN.append(len(TRIPS))
    if follower:  # a job that waits for this one, queued while this one runs (as an identical upload's is)
        from rq import get_current_job

        job = get_current_job()
        Queue("t", connection=job.connection).enqueue(f"{__name__}.record_run", depends_on=job)
    if probe_ttl:
        from rq import get_current_job

        job = get_current_job()
        TTL_IN_JOB.append(job.connection.ttl(job.key))
    if suspend:  # as `rq suspend` does
        from rq import get_current_job
        from rq.suspension import suspend as suspend_workers

        suspend_workers(get_current_job().connection)
    if fail:
        raise RuntimeError("this job fails")


@pytest.fixture
def counted(real_redis, monkeypatch):
    """Every round trip to Redis: a command sent alone, a pipeline sent, a command a WATCHing pipeline sends."""
    import redis

    TRIPS.clear()
    RAN.clear()
    AT_DEQUEUE.clear()
    TTL_IN_JOB.clear()
    send = redis.Redis.execute_command
    execute = redis.client.Pipeline.execute
    immediate = redis.client.Pipeline.immediate_execute_command

    def command(self, *args, **kw):
        TRIPS.append(tuple(map(str, args[:2])))
        if args[0] in ("LMOVE", "BLMOVE"):
            AT_DEQUEUE.append((send(self, "HGET", "rq:worker:burst", "state"), send(self, "TTL", "rq:worker:burst")))
        return send(self, *args, **kw)

    monkeypatch.setattr(redis.Redis, "execute_command", command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", lambda pipe, *a, **kw: TRIPS.append(
        tuple(" ".join(map(str, c[0][:3])) for c in pipe.command_stack)) or execute(pipe, *a, **kw))
    monkeypatch.setattr(redis.client.Pipeline, "immediate_execute_command",
                        lambda pipe, *args, **kw: TRIPS.append(tuple(map(str, args[:2]))) or immediate(pipe, *args, **kw))
    return TRIPS


def work(real_redis) -> ResizeWorker:
    """A worker on queue "t" that runs what is queued, then stops."""
    w = ResizeWorker([Queue("t", connection=real_redis)], connection=real_redis, name="burst", worker_ttl=30)
    w.reconciles = False
    try:
        w.work(burst=True)
    finally:
        if w.pubsub is not None:  # RQ unsubscribes but leaves its connection open
            w.pubsub.close()
    return w


def run_burst(real_redis, jobs: list[dict]) -> tuple[ResizeWorker, Queue]:
    """``jobs``: each one's keyword arguments to ``record_run`` (and to RQ's enqueue, e.g. ``ttl``)."""
    queue = Queue("t", connection=real_redis)
    for kwargs in jobs:
        queue.enqueue(f"{__name__}.record_run", **kwargs)  # this very module (its lists)
    return work(real_redis), queue


def test_a_job_costs_the_worker_four_round_trips_of_rqs_bookkeeping_three_of_them_writes(real_redis, counted,
                                                                                           monkeypatch):
    """The ending (with its read of the job's dependents, the state "idle", the renewal and the `rq suspend`
    check), the dequeue, the fetch and the start (with the PERSIST RQ's Job.perform sends alone): 4, of which
    three write (the ending, the dequeue, the start). It was 13: the execution's record before the start, the
    job's heartbeat after it ran, the state, a renewal, the suspension check and the PERSIST each on their own,
    one more renewal before the dequeue, and RQ's WATCH and SMEMBERS of the dependents before its ending. Where
    Redis keeps what it acknowledges, every write waits for an fsync, and every round trip for the fsync of the
    pass it is served in."""
    import redis

    transactions = []
    execute = redis.client.Pipeline.execute  # (counted's, which records the trip)

    def recording(pipe, *args, **kwargs):
        if pipe.command_stack:
            transactions.append((pipe.command_stack[0][0][0], pipe.transaction))
        return execute(pipe, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", recording)
    run_burst(real_redis, [{}] * 4)
    assert len(RAN) == 4
    for a, b in zip(RAN[1:], RAN[2:]):
        trips = counted[a:b]
        assert [trip[0].split()[0] for trip in trips] == ["SMEMBERS", "LMOVE", "HGETALL", "HSET"], trips
        assert trips[0][1].startswith("HINCRBY ") and trips[0][-1] == "EXISTS rq:suspended"
        assert len([trip for trip in trips if trip[0].split()[0] != "HGETALL"]) == 3
    assert ("SMEMBERS", True) in transactions and ("SMEMBERS", False) not in transactions  # MULTI ... EXEC


def test_jobs_that_wait_for_a_job_are_queued_after_its_ending(real_redis, counted):
    """The ending reads the job's dependents in its own transaction (RQ read them before it, WATCHing them): a
    job queued to wait for it before it ran, and one queued while it ran, are both queued once it has ended."""
    from rq.job import Job

    queue = Queue("t", connection=real_redis)
    first = queue.enqueue(f"{__name__}.record_run", follower=True)
    waiting = queue.enqueue(f"{__name__}.record_run", depends_on=first)
    assert waiting.get_status() == "deferred"
    work(real_redis)
    assert len(RAN) == 3  # the first, then the one queued before it ran and the one queued while it ran
    finished = [Job.fetch(i, connection=real_redis) for i in queue.finished_job_registry.get_job_ids()]
    assert len(finished) == 3 and {job.get_status() for job in finished} == {"finished"}
    assert real_redis.scard(first.dependents_key) == 0


def test_a_job_whose_result_is_not_kept_still_has_the_jobs_waiting_for_it_queued(real_redis, counted):
    """result_ttl=0: RQ's cleanup deletes the job's dependents set in the ending itself; RQ's own ending then
    queues them in it."""
    queue = Queue("t", connection=real_redis)
    first = queue.enqueue(f"{__name__}.record_run", result_ttl=0)
    queue.enqueue(f"{__name__}.record_run", depends_on=first)
    work(real_redis)
    assert len(RAN) == 2 and not real_redis.exists(first.key)


def test_a_job_runs_with_its_key_persisted_by_its_start(real_redis, counted):
    """RQ's Job.perform removes the job key's TTL (a job enqueued with one must not expire while it runs) in a
    round trip of its own; here the start transaction does it."""
    w, _ = run_burst(real_redis, [{"probe_ttl": True, "ttl": 300}])
    assert TTL_IN_JOB == [-1] and isinstance(w.job_class("x", connection=real_redis), worker_module.ResizeJob)
    start = [trip for trip in counted if "LREM rq:queue:t:intermediate 1" in trip]
    assert len(start) == 1 and any(c.startswith("PERSIST rq:job:") for c in start[0])
    assert not [trip for trip in counted if trip[:1] == ("PERSIST",)]  # not on its own


def test_a_job_starts_in_one_transaction_with_its_execution_record(real_redis, counted):
    w, _ = run_burst(real_redis, [{}] * 2)
    start = [" | ".join(trip) for trip in counted[RAN[0]:RAN[1]] if "LREM rq:queue:t:intermediate 1" in trip]
    assert len(start) == 1
    job_key = start[0].split("HSET rq:job:")[1].split()[0]
    for expected in (f"HSET rq:execution:{job_key}:", f"ZADD rq:executions:{job_key}", "ZADD rq:wip:t",
                     f"HSET {w.key} state", f"HSET {w.key} current_job", f"EXPIRE {w.key} 20"):
        assert expected in start[0]


def test_after_a_job_the_worker_is_idle_with_its_full_ttl_in_the_jobs_ending(real_redis, counted):
    w, _ = run_burst(real_redis, [{}] * 2)
    between = counted[RAN[0]:RAN[1]]
    ending = [trip for trip in between if "ZADD rq:finished:t" in " | ".join(trip)]
    assert len(ending) == 1 and ending[0][-4:] == (f"HSET {w.key} state", f"HSET {w.key} last_heartbeat",
                                                   f"EXPIRE {w.key} 90", "EXISTS rq:suspended")
    assert any(c.startswith("HSET rq:job:") and c.endswith(" status") for c in ending[0])  # the job's own end
    assert between[between.index(ending[0]) + 1][0] == "LMOVE"  # the next dequeue, nothing in between
    state, ttl = AT_DEQUEUE[1]  # in Redis, between the two jobs
    assert state == b"idle" and ttl > 20


def test_a_stop_requested_while_a_job_ends_waits_for_the_job(real_redis, counted, monkeypatch):
    """SIGTERM during the job's ending (RQ's handler, _shutdown, raises StopRequested at once unless the worker
    is busy): the job still ends SUCCESS, and the worker stops before the next job."""
    def cleanup_then_sigterm(self, job, pipeline):
        ending(self, job, pipeline)
        self.request_stop(signal.SIGTERM, None)  # what RQ's SIGTERM handler is

    ending = ResizeWorker.cleanup_execution
    monkeypatch.setattr(ResizeWorker, "cleanup_execution", cleanup_then_sigterm)
    _, queue = run_burst(real_redis, [{}, {}])
    assert len(RAN) == 1 and queue.count == 1
    assert queue.finished_job_registry.count == 1 and queue.failed_job_registry.count == 0


def test_a_suspension_seen_at_a_jobs_end_stops_the_worker_before_the_next_job(real_redis, counted):
    _, queue = run_burst(real_redis, [{"suspend": True}, {}])
    assert len(RAN) == 1 and queue.count == 1


def test_after_a_failed_job_the_worker_asks_for_a_suspension_itself(real_redis, counted):
    """A failure's ending is RQ's, which asks nothing: the worker's own check after it sees `rq suspend`."""
    _, queue = run_burst(real_redis, [{"suspend": True, "fail": True}, {}])
    assert len(RAN) == 1 and queue.count == 1  # it stopped before the next job
    assert ("EXISTS rq:suspended",) in [trip[-1:] for trip in counted]


@pytest.mark.parametrize("fail", [False, True])
def test_the_jobs_last_heartbeat_goes_out_with_its_ending(real_redis, counted, fail):
    from rq.job import Job

    w, queue = run_burst(real_redis, [{"fail": fail}])
    registry = queue.failed_job_registry if fail else queue.finished_job_registry
    job = Job.fetch(registry.get_job_ids()[0], connection=real_redis)
    assert job.get_status() == ("failed" if fail else "finished")
    assert job.ended_at is not None and job.last_heartbeat == job.ended_at
    assert ("HSET", job.key) not in counted[RAN[0]:]  # not a round trip of its own
    # the state "idle" and the renewal: in a success's ending; after a failure's, on their own (RQ lets a
    # failure's ending fail quietly)
    idle = [trip for trip in counted[RAN[0]:] if f"HSET {w.key} state" in trip]
    assert len(idle) == 1 and f"EXPIRE {w.key} 90" in idle[0] and "EXISTS rq:suspended" in idle[0]
    assert ("ZADD rq:finished:t" in " | ".join(idle[0])) != fail


@pytest.mark.parametrize("resident_mb, limit_mb, jobs_run", [(101, 100, 1), (99, 100, 2), (10_000, 0, 2)])
def test_a_worker_grown_past_its_memory_limit_leaves_before_the_next_job(real_redis, counted, monkeypatch,
                                                                         resident_mb, limit_mb, jobs_run):
    monkeypatch.setattr(ResizeWorker, "max_rss", limit_mb << 20)
    monkeypatch.setattr(worker_module, "resident_bytes", lambda: resident_mb << 20)
    _, queue = run_burst(real_redis, [{}, {}])
    assert len(RAN) == jobs_run and queue.count == 2 - jobs_run  # the job it left is still queued for another


@pytest.mark.parametrize("limit_mb, warned", [(100, True), (200, False), (0, False)])
def test_a_memory_limit_below_what_a_worker_holds_at_rest_is_reported_at_start(monkeypatch, caplog, limit_mb,
                                                                                warned):
    monkeypatch.setattr(worker_module, "resident_bytes", lambda: 150 << 20)
    with caplog.at_level("WARNING", logger="resizer.worker"):
        worker_module.check_memory_limit(limit_mb << 20)
    assert ("replaced after every job" in caplog.text) == warned


def test_resident_bytes_is_what_the_process_holds_now():
    before = worker_module.resident_bytes()
    ballast = bytearray(64 << 20)  # zero pages are only mapped: touch them
    ballast[::4096] = b"x" * len(range(0, len(ballast), 4096))
    held = worker_module.resident_bytes()
    del ballast
    after = worker_module.resident_bytes()
    assert held - before >= 60 << 20
    assert held - after >= 60 << 20  # not the peak: memory given back is not counted


def test_the_rq_code_the_worker_replaces_is_the_code_it_was_written_against():
    """execute_job and handle_execution_ended are RQ's, rewritten (see worker.py): an RQ that changes either
    must be read again before it is let in."""
    import inspect
    import textwrap

    from rq.worker import BaseWorker, SimpleWorker

    assert textwrap.dedent(inspect.getsource(SimpleWorker.execute_job)).splitlines()[2:] == [
        "    self.prepare_execution(job)", "    self.perform_job(job, queue)", "    self.set_state(WorkerStatus.IDLE)"]
    assert textwrap.dedent(inspect.getsource(BaseWorker.handle_execution_ended)).splitlines()[2:] == [
        "    job.ended_at = now()", "    job.heartbeat(now(), heartbeat_ttl)"]
    # prepare_job_execution is RQ's prepare_execution and prepare_job_execution in one transaction
    def statements(function) -> list[str]:  # after the docstring, without comments and debug logs
        body = inspect.getsource(function).split('"""')[-1]
        return [line.strip() for line in body.splitlines()
                if line.strip() and not line.strip().startswith(("#", "self.log.debug"))]

    from rq import executions

    assert statements(executions.prepare_execution) == [
        "from .worker.base import WorkerStatus", "with worker.connection.pipeline() as pipeline:",
        "heartbeat_ttl = worker.get_heartbeat_ttl(job)",
        "worker.execution = Execution.create(job, heartbeat_ttl, pipeline=pipeline, worker_name=worker.name)",
        "worker.set_state(WorkerStatus.BUSY, pipeline=pipeline)", "pipeline.execute()", "return worker.execution"]
    assert statements(BaseWorker.prepare_job_execution) == [
        "with self.connection.pipeline() as pipeline:", "self.set_current_job_id(job.id, pipeline=pipeline)",
        "self.set_current_job_working_time(0, pipeline=pipeline)", "heartbeat_ttl = self.get_heartbeat_ttl(job)",
        "self.heartbeat(heartbeat_ttl, pipeline=pipeline)", "job.heartbeat(now(), heartbeat_ttl, pipeline=pipeline)",
        "job.prepare_for_execution(self.name, pipeline=pipeline)", "if remove_from_intermediate_queue:",
        "from ..queue import Queue", "queue = Queue(job.origin, connection=self.connection)",
        "pipeline.lrem(queue.intermediate_queue_key, 1, job.id)", "pipeline.execute()",
        "msg = 'Processing {0} from {1} since {2}'",
        "self.procline(msg.format(job.func_name, job.origin, time.time()))"]
    from rq.job import Job

    # ResizeWorker._end_success is RQ's handle_job_success with the dependents read inside its transaction. That
    # holds because RQ's enqueue of a dependent WATCHes the job it depends on and defers it only if unfinished,
    # and because a job whose result is not kept deletes its dependents in its ending (RQ's ending then)
    from rq.queue import Queue as RQQueue

    setup = statements(RQQueue.setup_dependencies)
    assert setup.index("pipe.watch(job.dependencies_key)") < setup.index(
        "dependencies = job.fetch_dependencies(watch=True, pipeline=pipe)") < setup.index(
        "if dependency.get_status(refresh=False) != JobStatus.FINISHED:") < setup.index(
        "job.register_dependency(pipeline=pipe)")
    assert "connection.watch(*[self.key_for(dependency_id) for dependency_id in self._dependency_ids])" in \
        statements(Job.fetch_dependencies)
    assert "connection.delete(self.key, self.dependents_key, self.dependencies_key)" in statements(Job.delete)
    assert statements(BaseWorker.handle_job_success) == [
        "with self.connection.pipeline() as pipeline:", "while True:", "try:",
        "pipeline.watch(job.dependents_key)", "queue.enqueue_dependents(job, pipeline=pipeline)",
        "if not pipeline.explicit_transaction:", "pipeline.multi()",
        "self.increment_successful_job_count(pipeline=pipeline)",
        "self.increment_total_working_time(job.ended_at - job.started_at, pipeline)  # type: ignore",
        "result_ttl = job.get_result_ttl(self.default_result_ttl)", "if result_ttl != 0:",
        "execution_id = self.execution.id if self.execution else None",
        "execution_started_at = self.execution.created_at if self.execution else None", "job._handle_success(",
        "result_ttl,", "pipeline=pipeline,", "worker_name=self.name,", "execution_id=execution_id,",
        "execution_started_at=execution_started_at,", "execution_ended_at=job.ended_at,", ")",
        "if job.repeats_left is not None and job.repeats_left > 0:", "from ..repeat import Repeat", "self.log.info(",
        "'Worker %s: job %s scheduled to repeat (%s left)', self.name, job.id, job.repeats_left", ")",
        "Repeat.schedule(job, queue, pipeline=pipeline)", "else:",
        "job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)",
        "self.cleanup_execution(job, pipeline=pipeline)", "pipeline.execute()", "assert job.started_at",
        "assert job.ended_at", "time_taken = job.ended_at - job.started_at", "if self.log_job_description:",
        "self.log.info(", "'Successfully completed %s job in %ss on worker %s', job.description, time_taken, self.name",
        ")", "else:", "self.log.info(",
        "'Successfully completed job %s in %ss on worker %s', job.id, time_taken, self.name", ")", "break",
        "except redis.exceptions.WatchError:", "continue"]
    assert statements(executions.cleanup_execution) == [
        "logger.debug('Cleaning up execution of job %s', job.id)", "worker.set_current_job_id(None, pipeline=pipeline)",
        "if worker.execution is not None:", "worker.execution.delete(job=job, pipeline=pipeline)",
        "worker.execution = None"]
    # perform_job prepares the job (and now its execution record) inside its try, before the job runs
    perform = inspect.getsource(BaseWorker.perform_job)
    assert -1 < perform.find("try:") < perform.find("self.prepare_job_execution(job, remove_from_intermediate_queue)") \
        < perform.find("return_value = job.perform()") < perform.find("self.handle_job_success(")
    # when the job raised or its success's ending failed, RQ marks it failed, then calls handle_execution_ended
    # (which closes the job's ending to joins), then the failure callback (which may end the job by itself)
    failed = perform[perform.find("except:"):]
    assert -1 < failed.find("job._status = JobStatus.FAILED") < failed.find("self.handle_execution_ended(") \
        < failed.find("job.execute_failure_callback(")
    # ResizeJob.perform is RQ's without its PERSIST (the start sends it), and RQ dequeues with the worker's job
    # class
    from rq.job import Job

    assert statements(Job.perform) == [
        "self.connection.persist(self.key)", "_job_stack.push(self)", "try:", "self._result = self._execute()",
        "finally:", "assert self is _job_stack.pop()", "return self._result"]
    assert "job_class=self.job_class" in inspect.getsource(BaseWorker.dequeue_job_and_maintain_ttl)
    # a SIGTERM waits for the job only while the worker is busy: it stays busy to itself until its ending is sent
    assert "if self.get_state() == WorkerStatus.BUSY:" in inspect.getsource(BaseWorker._shutdown)
    # _retire_if_grown stops the worker as a warm shutdown does: RQ's loop must look at the flag before it dequeues
    work = inspect.getsource(BaseWorker.work)
    assert -1 < work.find("if self._stop_requested:") < work.find("self.dequeue_job_and_maintain_ttl(")


# -- a real resize job: its success is published in RQ's ending of the job ------------------------------------
TENANT = "acme"


@pytest.fixture
def resizing(real_redis):
    """A worker context with storage in memory, installed as the worker process's own."""
    from concurrent.futures import ThreadPoolExecutor

    from resizer.imaging import ImageLimits
    from resizer.reaper import Reaper
    from settings import Settings

    from fakes import FakeStorage

    storage = FakeStorage()
    ctx = worker_module.WorkerContext(
        settings=Settings.from_env({"APP_ENV": "testing", "WEBHOOK_SECRET": "s", "QUEUE_NAME": "t"}),
        storage=storage, limits=ImageLimits(10**8, 8192, 300), pool=ThreadPoolExecutor(2),
        reaper=Reaper(storage, background=False))
    worker_module.set_context(ctx)
    yield ctx
    worker_module.set_context(None)
    ctx.pool.shutdown()


def queue_resizes(real_redis, ctx, count: int = 1, callback: str | None = None, retries: int = 0) -> list[str]:
    import io
    import uuid

    from PIL import Image
    from rq import Callback, Retry

    from resizer.options import Limits, parse_options
    from resizer.queueing import ON_FAILURE
    from resizer.storage import original_key

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, "PNG")
    spec = parse_options({"width": 20, **({"callback_url": callback} if callback else {})}, Limits()).to_dict()
    tokens = []
    for _ in range(count):
        token = str(uuid.uuid4())
        ctx.storage.put(original_key(token), buf.getvalue(), "image/png")
        Queue("t", connection=real_redis).enqueue("resizer.tasks.resize_job", token, TENANT, spec, None,
                                                  retry=Retry(max=retries) if retries else None,
                                                  on_failure=Callback(ON_FAILURE))  # as enqueue_resize does
        tokens.append(token)
    return tokens


def test_a_successs_result_goes_out_in_rqs_ending_of_the_job_not_in_a_write_of_its_own(real_redis, resizing,
                                                                                        counted):
    """The result (which wakes long polls), the metric and RQ's "finished" in one transaction: one write (and
    one fsync, where Redis keeps what it acknowledges) a job less, and no moment where one is seen without the
    other."""
    from resizer import records
    from resizer.metrics import PREFIX as METRICS

    tokens = queue_resizes(real_redis, resizing, count=2)
    work(real_redis)
    for token in tokens:
        sent = [trip for trip in counted if any(c.startswith(f"SET {records.RESULT_PREFIX}{token}") for c in trip)]
        assert len(sent) == 1, sent  # published once
        ending = " | ".join(sent[0])
        for expected in ("ZADD rq:finished:t", f"RPUSH {records.DONE_PREFIX}{token}", f"HINCRBY {METRICS}jobs",
                         "HSET rq:worker:burst state"):
            assert expected in ending
        assert records.read_result(real_redis, token, TENANT)["status"] == "SUCCESS"
        assert real_redis.llen(records.DONE_PREFIX + token) == 1
    assert real_redis.hgetall(METRICS + "jobs") == {b"success|": b"2"}
    assert resizing.reaper.pending() == 2  # the originals (in storage) go once each job has ended


def test_a_successs_webhook_is_queued_in_its_ending(real_redis, resizing, counted):
    """With the result, in RQ's ending of the job: never a job finished whose webhook a crash could lose."""
    from resizer import records, webhooks

    token, = queue_resizes(real_redis, resizing, callback="https://hooks.example.com/done")
    work(real_redis)
    queued = [trip for trip in counted if f"rq:job:webhook-{token}" in " | ".join(trip)]
    assert len(queued) == 1 and "ZADD rq:finished:t" in " | ".join(queued[0])
    assert f"SET {records.RESULT_PREFIX}{token}" in " | ".join(queued[0])
    assert real_redis.lrange(f"rq:queue:{webhooks.queue_name(resizing.settings)}", 0, -1) == [
        f"webhook-{token}".encode()]
    assert records.read_result(real_redis, token, TENANT)["status"] == "SUCCESS"
    assert resizing.reaper.pending() == 1  # what follows the ending: the original (in storage) goes


def test_a_success_whose_ending_fails_is_run_again_and_published_once(real_redis, resizing, counted, monkeypatch):
    """RQ treats a failed ending as the job's failure and retries it: nothing of the first ending is left (no
    result, no metric counted twice, nothing queued after it), and the second run publishes it."""
    import redis

    from resizer import records
    from resizer.metrics import PREFIX as METRICS

    ending = ResizeWorker.cleanup_execution
    endings_seen = []

    def first_ending_fails(self, job, pipeline):
        ending(self, job, pipeline)
        if not self._ending_success:
            return  # RQ's handling of the failure cleans up too
        endings_seen.append(job.id)
        if len(endings_seen) == 1:
            raise redis.exceptions.ConnectionError("Redis went away in the ending")

    monkeypatch.setattr(ResizeWorker, "cleanup_execution", first_ending_fails)
    token, = queue_resizes(real_redis, resizing, callback="https://hooks.example.com/done", retries=1)
    work(real_redis)
    assert len(endings_seen) == 2  # run twice
    assert records.read_result(real_redis, token, TENANT)["status"] == "SUCCESS"
    assert real_redis.hgetall(METRICS + "jobs") == {b"success|": b"1"}
    webhook_queued = [trip for trip in counted if f"rq:job:webhook-{token}" in " | ".join(trip)]
    assert len(webhook_queued) == 1 and resizing.reaper.pending() == 1
    # the failed ending's execution was removed by the failure's cleanup: nothing left for RQ to find
    # "abandoned" later and run again
    assert real_redis.zcard("rq:wip:t") == 0 and not real_redis.keys("rq:execution:*")


def test_a_success_whose_ending_fails_on_the_last_attempt_is_published_by_the_safety_net(real_redis, resizing,
                                                                                          counted, monkeypatch):
    """No attempt left: RQ's failure callback (``tasks.on_failure``) finds the success recorded in storage and
    publishes it by itself (nothing may join the failed ending any more), with its webhook, once."""
    import redis

    from resizer import records
    from resizer.metrics import PREFIX as METRICS

    ending = ResizeWorker.cleanup_execution

    def ending_fails(self, job, pipeline):
        ending(self, job, pipeline)
        if self._ending_success:
            raise redis.exceptions.ConnectionError("Redis went away in the ending")

    monkeypatch.setattr(ResizeWorker, "cleanup_execution", ending_fails)
    token, = queue_resizes(real_redis, resizing, callback="https://hooks.example.com/done")
    work(real_redis)
    assert records.read_result(real_redis, token, TENANT)["status"] == "SUCCESS"
    assert real_redis.llen(records.DONE_PREFIX + token) == 1
    assert real_redis.hgetall(METRICS + "jobs") == {b"success|": b"1"}
    assert len([trip for trip in counted if f"rq:job:webhook-{token}" in " | ".join(trip)]) == 1
    assert real_redis.zcard("rq:wip:t") == 0 and not real_redis.keys("rq:execution:*")


def test_followers_not_queued_after_the_ending_are_queued_by_the_reconciler(real_redis, resizing, monkeypatch,
                                                                          caplog):
    """The followers of a job (identical uploads: ``reuse``) are queued after its ending, no longer in it: if
    that fails (or the worker dies in between), the job has still succeeded, and the reconciler queues them."""
    import logging
    import uuid

    import redis
    from rq.job import Job

    from resizer.queueing import enqueue_resize
    from resizer.reconcile import reconcile

    import io

    from PIL import Image

    from resizer.options import Limits, parse_options
    from resizer.storage import original_key

    queue, spec = Queue("t", connection=real_redis), parse_options({"width": 20}, Limits()).to_dict()
    first, follower = str(uuid.uuid4()), str(uuid.uuid4())
    png = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(png, "PNG")
    resizing.storage.put(original_key(first), png.getvalue(), "image/png")
    enqueue_resize(queue, resizing.settings, first, TENANT, spec, None)  # as the API queues them
    enqueue_resize(queue, resizing.settings, follower, TENANT, spec, None, follows=first)
    status = lambda token: Job.fetch(token, connection=real_redis).get_status()  # noqa: E731
    assert status(follower) == "deferred"
    queue_them = Queue.enqueue_dependents

    def blip(self, job, *args, **kwargs):
        raise redis.exceptions.ConnectionError("Redis went away for a moment")

    monkeypatch.setattr(Queue, "enqueue_dependents", blip)
    with caplog.at_level(logging.WARNING, logger="resizer.worker"):
        work(real_redis)
    assert status(first) == "finished" and status(follower) == "deferred"
    assert "the reconciler will" in caplog.text
    monkeypatch.setattr(Queue, "enqueue_dependents", queue_them)
    reconcile(real_redis, resizing.storage, resizing.settings, force=True)
    assert status(follower) == "queued"


def test_an_original_in_redis_is_read_by_the_jobs_start_not_in_a_round_trip_of_its_own(real_redis, resizing,
                                                                                       counted):
    """A small original rides in Redis with its job (the API's transaction): the start of the job reads it."""
    import io
    import uuid

    from PIL import Image
    from rq.job import Job

    from resizer import originals
    from resizer.options import Limits, parse_options
    from resizer.queueing import enqueue_resize

    token, spec = str(uuid.uuid4()), parse_options({"width": 20}, Limits()).to_dict()
    png = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(png, "PNG")
    with real_redis.pipeline() as pipe:  # as the API queues it
        pipe.multi()
        originals.stash_in_redis(pipe, token, originals.envelope(png.getvalue(), "image/png", TENANT, spec, None))
        enqueue_resize(Queue("t", connection=real_redis), resizing.settings, token, TENANT, spec, None, pipeline=pipe,
                       original="redis")
        pipe.execute()
    work(real_redis)
    assert Job.fetch(token, connection=real_redis).get_status() == "finished"
    key = originals.REDIS_PREFIX + token
    reads = [trip for trip in counted if f"GET {key}" in trip or trip == ("GET", key)]
    assert len(reads) == 1 and "LREM rq:queue:t:intermediate 1" in reads[0]  # the start's transaction
    assert not real_redis.exists(key)  # released by the ending
    assert [k for k in resizing.storage.objects if k.startswith("outputs/")]  # and resized
    assert resizing.original is None


def test_a_success_whose_result_is_not_kept_still_publishes_in_its_ending(real_redis, resizing, counted):
    """result_ttl=0 ends the job through RQ's own ending (above): what the success joined to it goes out too."""
    import io
    import uuid

    from PIL import Image

    from resizer import records
    from resizer.options import Limits, parse_options
    from resizer.storage import original_key

    token, spec = str(uuid.uuid4()), parse_options({"width": 20}, Limits()).to_dict()
    png = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(png, "PNG")
    resizing.storage.put(original_key(token), png.getvalue(), "image/png")
    Queue("t", connection=real_redis).enqueue("resizer.tasks.resize_job", token, TENANT, spec, None, job_id=token,
                                              result_ttl=0)
    work(real_redis)
    record = records.read_result(real_redis, token, TENANT)
    assert record is not None and record["status"] == "SUCCESS"
    assert not real_redis.exists(f"rq:job:{token}")  # not kept
    assert [trip for trip in counted if trip[:1] == ("WATCH",)]  # RQ's own ending


def test_a_jobs_ending_takes_joins_only_while_open_and_runs_what_follows_once(resizing):
    assert resizing.join_ending(lambda pipe: None, lambda: None) is False  # no job's ending is open
    ending = resizing.ending
    ran = []
    ending.open()
    assert resizing.join_ending(lambda pipe: ran.append("queued"), lambda: ran.append("after"))
    ending.queue(None)
    ending.queue(None)  # RQ sends its ending again after a WatchError: queued again each time
    ending.done()
    ending.done()
    assert ran == ["queued", "queued", "after"]  # what follows runs once
    assert resizing.join_ending(lambda pipe: None, lambda: None) is False  # closed once done


def test_a_step_after_the_ending_that_raises_does_not_fail_the_ended_job(resizing, caplog):
    ending = resizing.ending
    ran = []
    ending.open()
    ending.join(lambda pipe: None, lambda: 1 / 0)
    ending.join(lambda pipe: None, lambda: ran.append("next"))
    ending.done()
    assert ran == ["next"] and "ZeroDivisionError" in caplog.text


def test_a_resize_worker_loads_the_jobs_module_at_start_not_in_its_first_job(real_redis, redis_server):
    """RQ imports a job's function when it first runs one: resizer.tasks and what it needs (78 ms with nothing else
    running, several times that under load) went into a fresh worker's first job (after a deploy, a crash, or a
    worker replaced past WORKER_MAX_RSS_MB)."""
    env = {"PATH": os.environ["PATH"], "APP_ENV": "testing", "REDIS_URL": redis_server,
           "S3_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens: the start-up's storage calls fail at once
    for queue, loaded in (("resize", True), ("webhooks", False)):
        run = subprocess.run([sys.executable, "-X", "importtime", "rq_worker.py", "--burst", "--queue", queue],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "resizer.worker" in imported  # the import log is there: the test reads what it should
        assert ("resizer.tasks" in imported) is loaded, queue


# -- the heartbeat: one thread per worker, asleep between jobs ------------------------------------------------
def test_the_pacemaker_beats_while_a_job_runs_and_never_after_it_ended():
    from tests.conftest import wait_until

    beats: list[str] = []
    pacemaker = worker_module.Pacemaker(beats.append, 0.02)
    pacemaker.start("a")
    thread = pacemaker._thread
    wait_until(lambda: beats.count("a") >= 3, "three beats of job a")
    pacemaker.stop(timeout=5)
    after_a = beats.count("a")
    pacemaker.start("b")
    wait_until(lambda: beats.count("b") >= 3, "three beats of job b")  # the thread kept beating meanwhile
    pacemaker.stop(timeout=5)
    assert beats.count("a") == after_a and set(beats) == {"a", "b"}
    assert pacemaker._thread is thread and thread.is_alive()  # one thread for both jobs


def test_a_job_shorter_than_the_interval_gets_no_beat():
    from tests.conftest import wait_until

    beats: list[str] = []
    pacemaker = worker_module.Pacemaker(beats.append, 0.2)
    pacemaker.start("short")
    pacemaker.stop(timeout=5)
    pacemaker.start("long")
    wait_until(lambda: "long" in beats, "a beat of the long job")  # an interval has passed since "short" ended
    pacemaker.stop(timeout=5)
    assert "short" not in beats


def test_stopping_waits_for_a_beat_in_flight_and_a_failing_beat_does_not_stop_the_next():
    import threading

    entered, release, stopped = threading.Event(), threading.Event(), threading.Event()
    calls: list[str] = []

    def beat(job):
        calls.append(job)
        if len(calls) == 1:
            raise RuntimeError("Redis blip")
        entered.set()
        release.wait(10)

    pacemaker = worker_module.Pacemaker(beat, 0.01)
    pacemaker.start("a")
    assert entered.wait(10) and calls[:2] == ["a", "a"]  # the second beat came after the first one failed
    threading.Thread(target=lambda: (pacemaker.stop(timeout=10), stopped.set()), daemon=True).start()
    assert not stopped.wait(0.3)  # the job's ending waits while its beat is in flight
    release.set()
    assert stopped.wait(10)


def test_a_hung_beat_is_abandoned_and_the_next_job_gets_a_thread_of_its_own(caplog):
    import threading

    from tests.conftest import wait_until

    entered, release = threading.Event(), threading.Event()
    beats: list[tuple[str, threading.Thread]] = []

    def beat(job):
        beats.append((job, threading.current_thread()))
        if job == "a":  # Redis not answering
            entered.set()
            release.wait(30)

    pacemaker = worker_module.Pacemaker(beat, 0.01)
    pacemaker.start("a")
    assert entered.wait(10)
    hung = pacemaker._thread
    pacemaker.stop(timeout=0.2)
    assert "heartbeat has not returned" in caplog.text and hung.is_alive()
    pacemaker.start("b")
    wait_until(lambda: any(job == "b" for job, _ in beats), "a beat of job b")
    assert {thread for job, thread in beats if job == "b"} == {pacemaker._thread} and pacemaker._thread is not hung
    release.set()
    wait_until(lambda: not hung.is_alive(), "the abandoned thread to leave once its beat returned")
    pacemaker.stop(timeout=5)
    assert [job for job, _ in beats].count("a") == 1


def beat_seen() -> list:
    """A job that runs until the worker has renewed its heartbeat (at most 10 s); returns the OS ids of the
    heartbeat threads then alive."""
    import threading
    import time

    from rq import get_current_job

    job = get_current_job()
    first = job.connection.hget(job.key, "last_heartbeat")
    deadline = time.monotonic() + 10
    while job.connection.hget(job.key, "last_heartbeat") == first:
        if time.monotonic() > deadline:
            return []
        time.sleep(0.05)
    return [t.native_id for t in threading.enumerate() if t.name == "heartbeat" and t.is_alive()]


def test_a_worker_renews_long_jobs_heartbeats_from_one_thread(real_redis, monkeypatch):
    from rq.registry import StartedJobRegistry

    monkeypatch.setattr(ResizeWorker, "heartbeat_interval", 1)
    queue = Queue("t", connection=real_redis)
    jobs = [queue.enqueue(f"{__name__}.beat_seen") for _ in range(2)]
    w = work(real_redis)
    seen = [job.latest_result().return_value for job in jobs]
    assert all(seen), seen  # each job saw its heartbeat renewed while it ran
    assert w._pacemaker._thread.native_id in set(seen[0]) & set(seen[1])  # the worker's one thread beat for both
    assert StartedJobRegistry("t", connection=real_redis).get_job_ids() == []


def test_no_beat_goes_out_once_a_jobs_ending_may(real_redis, monkeypatch):
    """The heartbeat stops when the job's function returns: a beat during the ending could follow it and write
    the ended job's heartbeat and execution record again. The ending here lasts longer than two intervals."""
    import threading

    monkeypatch.setattr(ResizeWorker, "heartbeat_interval", 1)
    beat, succeed = ResizeWorker._beat, ResizeWorker.handle_job_success
    ending, late = threading.Event(), threading.Event()

    def watched_beat(self, job):
        if ending.is_set():
            late.set()
        beat(self, job)

    def slow_ending(self, *args, **kwargs):
        ending.set()
        assert not late.wait(2.5), "a beat went out during the job's ending"
        return succeed(self, *args, **kwargs)

    monkeypatch.setattr(ResizeWorker, "_beat", watched_beat)
    monkeypatch.setattr(ResizeWorker, "handle_job_success", slow_ending)
    job = Queue("t", connection=real_redis).enqueue(f"{__name__}.beat_seen")
    work(real_redis)
    assert ending.is_set() and job.latest_result().return_value and not late.is_set()
