"""The RQ worker class: no fork per job, and a heartbeat that proves liveness during long jobs.

RQ's default ``Worker`` forks a work horse per job (~8 ms each, here); our jobs
hold no state between runs, so ``SimpleWorker`` runs them in-process and the
boto3/Redis clients and Pillow's plugins are set up once.  ``SimpleWorker`` has
no monitoring loop, though, so on its own it reserves a job for the whole job
timeout + 60 s: a killed worker's job would sit for minutes before anyone
noticed.  Here a small thread (one per process, asleep between jobs: a thread
started and joined for each job cost ~0.2 ms of CPU a job) renews the
reservation every ``heartbeat_interval`` seconds of a job, and the reservation
is only ``dead_after`` seconds long, so another worker's maintenance pass
re-queues a dead worker's job (through its ``Retry``) within about
``dead_after + maintenance_interval``.
Job time limits are still enforced by RQ's SIGALRM death penalty.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rq.executions import Execution
from rq.job import Job, JobStatus, _job_stack
from rq.queue import Queue
from rq.suspension import WORKERS_SUSPENDED
from rq.utils import now as rq_now
from rq.worker import SimpleWorker, WorkerStatus

from settings import Settings

from . import originals
from .imaging import ImageLimits
from .reaper import Reaper
from .reconcile import reconcile
from .storage import Storage

log = logging.getLogger("resizer.worker")
_monotonic = time.monotonic  # the renewal clock (a fake one in the tests)


class ResizeJob(Job):
    """RQ's job, whose ``perform`` does not send a PERSIST of the job's key of its own: the worker's start
    transaction carries it (``ResizeWorker.prepare_job_execution``), one round trip less a job.  Only for
    ``ResizeWorker`` (the service never runs jobs any other way, e.g. on a synchronous queue)."""

    def perform(self):  # RQ's, without `self.connection.persist(self.key)` (guarded by test_worker)
        _job_stack.push(self)
        try:
            self._result = self._execute()
        finally:
            assert self is _job_stack.pop()
        return self._result


class Pacemaker:
    """One thread that calls ``beat(job)`` every ``interval`` seconds while a job runs, for job after job.

    ``stop`` returns once no beat of the job is in flight, as joining a thread of the job's own did: the worker
    stops it when the job's function has returned, before the job's ending goes out, so no beat follows the
    ending (a late one would write the ended job's last heartbeat and recreate its execution record). A beat
    still running after ``timeout`` (Redis not answering) is abandoned with its thread, which leaves when the
    beat returns: the next job gets a thread of its own, so one hung beat cannot take the heartbeats of every
    job after it.
    """

    def __init__(self, beat: Callable[[Job], None], interval: float):
        self._beat, self._interval = beat, interval
        self._cond = threading.Condition()
        self._job: Job | None = None
        self._run = 0  # changes at every start and stop: a wait that sees it change beats no more for its job
        self._beating: threading.Thread | None = None  # the thread whose beat is in flight
        self._thread: threading.Thread | None = None

    def start(self, job: Job) -> None:
        with self._cond:
            self._job, self._run = job, self._run + 1
            self._cond.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
                self._thread.start()

    def stop(self, timeout: float) -> None:
        with self._cond:
            if self._job is None and self._beating is None:
                return  # stopped already
            self._job, self._run = None, self._run + 1
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._beating is None, timeout):
                log.warning("a heartbeat has not returned after %g s (is Redis answering?): the next job's "
                            "heartbeats get a thread of their own", timeout)
                self._thread = self._beating = None  # abandoned: it leaves once its beat returns

    def _loop(self) -> None:
        me = threading.current_thread()
        with self._cond:
            while self._thread is me:
                job = None  # holds no ended job while it sleeps
                self._cond.wait_for(lambda: self._job is not None or self._thread is not me)
                if self._thread is not me:
                    return
                run, job = self._run, self._job
                if self._cond.wait_for(lambda: self._run != run, self._interval):
                    continue  # the job ended (or another began) within the interval
                self._beating = me
                self._cond.release()
                try:
                    self._beat(job)
                except Exception:  # the caller's beat handles its own errors; the thread must outlive any
                    log.exception("heartbeat")
                finally:
                    self._cond.acquire()
                    if self._beating is me:
                        self._beating = None
                    self._cond.notify_all()


class ResizeWorker(SimpleWorker):
    job_class = ResizeJob
    heartbeat_interval: int = 5
    dead_after: int = 20
    reconciles: bool = True  # resize workers look for jobs Redis lost; the webhook worker does not
    renew_every: float = 1.0  # between jobs, the worker's own key is renewed at most this often
    _renewed: float = 0.0  # monotonic time of the last renewal that gave the key its full TTL
    _not_suspended: float = -1.0  # monotonic time the ending of a job found workers not suspended
    max_rss: int = 0  # bytes: past this after a job, the worker exits to be replaced (0: no limit)
    _idle_in_ending: bool = False  # the job's ending transaction carried the state "idle" and the renewal
    _ending_success: bool = False  # within RQ's handle_job_success
    _ending_execution: Execution | None = None  # the execution a success's ending removes
    _suspended_at_ending: bool = True  # `rq suspend` in force when the last success's ending was sent
    _suspension_read_at: float = -1.0  # monotonic time of that reply
    _pacemaker: Pacemaker | None = None  # made at the first job

    def get_heartbeat_ttl(self, job: Job) -> int:
        return self.dead_after

    # RQ renews the worker's key four times per job (after the job, in the suspension check, before and after
    # the dequeue), each an HSET and an EXPIRE of their own, and sets the state "idle" twice: 10 of the ~22
    # Redis round trips of a small job, each waiting for Redis's fsync where Redis keeps what it acknowledges.
    # The key lives worker_ttl + 60 s, so a renewal within the last second that gave it that full TTL is
    # enough. Only a renewal this class sent and saw succeed counts: one queued on someone else's pipeline (the
    # job's start, which shortens the TTL; the suspension check) may yet fail, so the next one goes out.
    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        full = timeout is None or timeout >= self.worker_ttl + 60
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            self._renewed = 0.0
            return
        if full and _monotonic() - self._renewed < self.renew_every:
            return
        self._renewed = 0.0
        with self.connection.pipeline(transaction=False) as pipe:  # HSET and EXPIRE in one round trip
            super().heartbeat(timeout, pipe)
            pipe.execute()
        self._renewed = _monotonic() if full else 0.0

    def set_state(self, state: str, pipeline=None) -> None:
        if pipeline is None and state == self._state:
            return  # e.g. "idle" after the job and again before the dequeue
        super().set_state(state, pipeline)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """SimpleWorker's, with the state "idle" and the worker's renewal after the job in the job's ending."""
        if self._pacemaker is None:
            self._pacemaker = Pacemaker(self._beat, self.heartbeat_interval)
        self._pacemaker.start(job)
        self._idle_in_ending = False
        self._suspended_at_ending = True  # until the ending's reply says otherwise: no reply, RQ's own check
        joined = context().ending
        joined.open()
        try:
            self.perform_job(job, queue)  # RQ's prepare_execution goes out with prepare_job_execution's transaction
        finally:
            joined.close()
            if _context is not None:
                _context.original = None  # read by the start, for this job only (a job that follows another skips it)
            self._pacemaker.stop(timeout=self.heartbeat_interval + 5)
        # RQ then checks for `rq suspend` before the next dequeue, a round trip of its own: asked here instead.
        if self._idle_in_ending:
            # The success's ending set the state, renewed the key and asked whether workers are suspended, and
            # went through (see handle_job_success and cleanup_execution): nothing is left to send.
            self._state = WorkerStatus.IDLE
            suspended, checked = self._suspended_at_ending, self._suspension_read_at
        else:  # a failure's ending, which RQ lets fail quietly: everything on its own
            with self.connection.pipeline(transaction=False) as pipe:
                self.set_state(WorkerStatus.IDLE, pipe)
                super().heartbeat(None, pipe)  # the job's start shortened the key's TTL: the full one again
                pipe.exists(WORKERS_SUSPENDED)
                suspended = pipe.execute()[-1]
            checked = _monotonic()
        self._renewed = _monotonic()
        self._not_suspended = -1.0 if suspended else checked  # when it was asked: the skip window starts there
        self._retire_if_grown(job)

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry) -> None:
        """RQ's (``_end_success``), whose transaction also carries what the job's success joined to it (its
        published result: ``endings``) and the worker's state "idle" and its renewal (cleanup_execution). If that
        transaction fails this raises, and RQ ends the job as a failure (so it is retried or ended by
        ``on_failure``): past it, all of them went through, and what the job asked to run once its result is out
        runs now. Jobs that waited for this one (identical work that follows it: ``reuse``) are queued last."""
        self._ending_success, self._ending_execution = True, None
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        try:
            if result_ttl == 0:
                # Nothing kept: RQ's cleanup deletes the dependents' set in the ending itself, so RQ's own ending,
                # which queues them in it. (Its replies are not read: the worker asks for `rq suspend` after it.)
                super().handle_job_success(job, queue, started_job_registry)
                waiting = False
            else:
                waiting = self._end_success(job, queue, result_ttl)
        except BaseException:
            # RQ forgot the execution before its ending was sent: the failure's cleanup must still remove it from
            # the started registry, or RQ would find it there later, "abandoned", and run or end the job again.
            self.execution = self._ending_execution or self.execution
            raise
        finally:
            self._ending_success, self._ending_execution = False, None
        self._idle_in_ending = True
        context().ending.done()
        if waiting:
            try:
                queue.enqueue_dependents(job)  # RQ's, in a WATCHed transaction of its own: each is queued once
            except Exception as exc:  # the job has ended: nothing here may turn it into a failure
                # The only jobs that wait for another are identical uploads following it (reuse): the reconciler
                # queues those (reuse.release_follower), as it does if the worker dies right after the ending.
                log.warning("job %s ended, but the jobs waiting for it were not queued yet (the reconciler will): %s",
                            job.id, exc)

    def _end_success(self, job: Job, queue: Queue, result_ttl: int) -> bool:
        """RQ's ``handle_job_success`` (rq 2.12, guarded by test_worker) in one round trip instead of three:
        True if jobs wait for this one.

        RQ WATCHes the job's set of dependents and reads it (two round trips, each waiting for the fsync of the
        pass it is served in where Redis keeps what it acknowledges), queues the dependents in its ending and
        sends the ending, again if the set changed meanwhile. Here the set is read inside the ending's
        transaction: a job that registered as a dependent before it is in the reply and is queued after it; one
        that registers after it finds this job finished, and RQ queues it at once (RQ's enqueue WATCHes the
        job it depends on, which the ending changes). The queueing is no longer in the ending's transaction:
        if the worker dies between the two, the reconciler queues them (only followers of identical work wait
        for another job here)."""
        with self.connection.pipeline() as pipeline:
            pipeline.multi()
            pipeline.smembers(job.dependents_key)  # its reply first
            self.increment_successful_job_count(pipeline=pipeline)
            self.increment_total_working_time(job.ended_at - job.started_at, pipeline)
            execution = self.execution  # (result_ttl is never 0 here: handle_job_success leaves those to RQ)
            job._handle_success(result_ttl, pipeline=pipeline, worker_name=self.name,
                                execution_id=execution.id if execution else None,
                                execution_started_at=execution.created_at if execution else None,
                                execution_ended_at=job.ended_at)
            if job.repeats_left is not None and job.repeats_left > 0:
                from rq.repeat import Repeat

                self.log.info("Worker %s: job %s scheduled to repeat (%s left)", self.name, job.id, job.repeats_left)
                Repeat.schedule(job, queue, pipeline=pipeline)
            else:
                job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)
            self.cleanup_execution(job, pipeline=pipeline)
            replies = pipeline.execute()
        self._suspended_at_ending, self._suspension_read_at = bool(replies[-1]), _monotonic()
        if self.log_job_description:  # RQ's two messages
            self.log.info("Successfully completed %s job in %ss on worker %s", job.description,
                          job.ended_at - job.started_at, self.name)
        else:
            self.log.info("Successfully completed job %s in %ss on worker %s", job.id, job.ended_at - job.started_at,
                          self.name)
        return bool(replies[0])

    def cleanup_execution(self, job: Job, pipeline) -> None:
        """RQ's; in a success's ending, also the state "idle" and the key's full TTL again (the job's start
        shortened it), instead of a write of their own after it. The state is written to Redis only: to itself
        the worker stays busy until the ending is sent, so that a SIGTERM meanwhile waits for the job (RQ's
        handler stops at once unless the worker is busy)."""
        if self._ending_success:  # RQ's cleanup forgets the execution (see handle_job_success); RQ's own ending
            # calls this again after a WatchError, with it forgotten
            self.execution = self._ending_execution = self.execution or self._ending_execution
        super().cleanup_execution(job, pipeline)
        if self._ending_success:
            context().ending.queue(pipeline)
            pipeline.hset(self.key, "state", WorkerStatus.IDLE)
            super().heartbeat(None, pipeline)
            pipeline.exists(WORKERS_SUSPENDED)  # the check before the next dequeue: its reply is the last

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """RQ's, with RQ's ``prepare_execution`` (the execution's record and the state "busy", a round trip that
        RQ sends just before this one) in the same transaction: one write less a job, and with Redis keeping
        what it acknowledges each write waits for an fsync that stalls every client (~0.5-2 ms here)."""
        with self.connection.pipeline() as pipeline:
            heartbeat_ttl = self.get_heartbeat_ttl(job)
            self.execution = Execution.create(job, heartbeat_ttl, pipeline=pipeline, worker_name=self.name)
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            self.set_current_job_id(job.id, pipeline=pipeline)
            self.set_current_job_working_time(0, pipeline=pipeline)
            self.heartbeat(heartbeat_ttl, pipeline=pipeline)
            job.heartbeat(rq_now(), heartbeat_ttl, pipeline=pipeline)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            pipeline.persist(job.key)  # RQ's Job.perform sends it alone; a job must not expire while it runs
            if remove_from_intermediate_queue:
                pipeline.lrem(Queue(job.origin, connection=self.connection).intermediate_queue_key, 1, job.id)
            # A job whose original rides in Redis reads it first thing: in this round trip instead of its own.
            reads_original = originals.in_redis(job.meta)
            if reads_original:
                originals.queue_read(pipeline, job.id)
            replies = pipeline.execute()
        if reads_original:
            context().original = (job.id, replies[-1])
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")

    def _retire_if_grown(self, job: Job) -> None:
        """Leave after this job if the process holds more memory than ``max_rss`` (a leak, or fragmentation
        a big image left): RQ's loop stops before the next dequeue, the process exits 0, and its supervisor
        (``make run``, compose's restart policy) starts a fresh one. Recycling only then, rather than every N
        jobs, spares a steady worker the ~1 s of CPU a restart costs."""
        if self._stop_requested:
            return
        if rss := over_limit(self.max_rss):
            log.warning("worker %s holds %d MB after job %s, more than WORKER_MAX_RSS_MB=%d: exiting to be "
                        "replaced by a fresh process", self.name, rss >> 20, job.id, self.max_rss >> 20)
            self._stop_requested = True  # what RQ's warm shutdown sets: its loop ends before the next dequeue

    def check_for_suspension(self, burst: bool) -> None:
        if 0 <= _monotonic() - self._not_suspended < self.renew_every:  # asked a moment ago, at the job's end
            self._not_suspended = -1.0  # once
            return
        super().check_for_suspension(burst)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """RQ's writes the job's last heartbeat here, a round trip of its own that nothing reads: liveness is
        the execution's (renewed by ``_beat``). The value is kept and goes out with the job's ending.

        RQ calls it also when the job raised or its success's ending failed, before the failure callback: then
        nothing joined to the ending will go out, and nothing may join it any more (the callback publishes
        whatever it ends by itself)."""
        if self._pacemaker is not None:  # no beat once the job's ending may go out
            self._pacemaker.stop(timeout=self.heartbeat_interval + 5)
        job.ended_at = rq_now()
        job.last_heartbeat = job.ended_at
        if job.get_status(refresh=False) == JobStatus.FAILED:
            context().ending.close()

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        if not self.reconciles:
            return
        try:
            reconcile(self.connection, context().storage, context().settings)
        except Exception as exc:  # storage or Redis blip: the next maintenance pass tries again
            log.warning("reconcile failed, will try again: %s", exc)

    def _beat(self, job: Job) -> None:
        if self.execution is None:
            return
        try:
            self.maintain_heartbeats(job)
        except Exception as exc:  # Redis blip: the next beat tries again
            log.warning("heartbeat for job %s failed: %s", job.id, exc)


def over_limit(max_rss: int) -> int:
    """The process's resident bytes if a limit is set and it holds more, else 0."""
    rss = resident_bytes() if max_rss else 0
    return rss if rss > max_rss else 0


def check_memory_limit(max_rss: int) -> None:
    """Warn at start when the limit is below what the worker already holds: it would be replaced after every job."""
    if rss := over_limit(max_rss):
        log.warning("WORKER_MAX_RSS_MB=%d is below what this worker holds before any job (%d MB): it will be "
                    "replaced after every job; raise it (a worker holds about 105 MB at rest)", max_rss >> 20,
                    rss >> 20)


def resident_bytes() -> int:
    """The process's resident memory now (Linux: /proc/self/statm; elsewhere its peak, which is what is known)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux and the BSDs


# -- what a worker process builds once ----------------------------------------------
Commands = Callable[[object], None]  # queues Redis commands on the pipeline it is given


class JobEnding:
    """The transaction in which RQ ends the job the worker runs (``ResizeWorker.handle_job_success``), which a
    job's success may join: its result then needs no write of its own (each write waits for Redis's fsync
    where Redis keeps what it acknowledges), and it is published exactly when RQ marks the job finished.

    Open only while the worker runs a job; a job run any other way (tests, the API ending reused work) finds
    it closed and publishes by itself."""

    def __init__(self) -> None:
        self._commands: list[Commands] | None = None
        self._after: list[Callable[[], None]] = []

    def open(self) -> None:
        self._commands, self._after = [], []

    def close(self) -> None:
        self._commands, self._after = None, []

    def join(self, commands: Commands, after: Callable[[], None]) -> bool:
        """Queue ``commands`` in the job's ending and run ``after`` once it went through; False if closed."""
        if self._commands is None:
            return False
        self._commands.append(commands)
        self._after.append(after)
        return True

    def queue(self, pipeline) -> None:
        """Into the ending's transaction (``ResizeWorker._end_success``)."""
        for commands in self._commands or ():
            commands(pipeline)

    def done(self) -> None:
        """The ending went through: what was to follow it runs, once."""
        after, self._commands, self._after = self._after, None, []
        for call in after:
            try:
                call()
            except Exception:  # the job has ended: nothing here may turn it into a failure
                log.exception("after a job's ending")


@dataclass
class WorkerContext:
    """Clients and settings built once per worker process, not once per job."""

    settings: Settings
    storage: Storage
    limits: ImageLimits
    pool: ThreadPoolExecutor  # for concurrent storage calls within a job
    reaper: Reaper  # deletes finished jobs' originals in batches
    ending: JobEnding = field(default_factory=JobEnding)  # the running job's, which its success joins
    original: tuple[str, bytes | None] | None = None  # (token, what Redis held) read by the running job's start

    def join_ending(self, commands: Commands, after: Callable[[], None]) -> bool:
        return self.ending.join(commands, after)

    def take_original(self, token: str) -> bytes | None | object:
        """The original of ``token`` as the job's start read it from Redis, once; ``originals.UNREAD`` if it did
        not (then the job reads it itself)."""
        read, self.original = self.original, None
        return read[1] if read is not None and read[0] == token else originals.UNREAD


_context: WorkerContext | None = None


def context() -> WorkerContext:
    global _context
    if _context is None:
        settings = Settings.from_env()
        storage = Storage(settings)
        _context = WorkerContext(
            settings=settings,
            storage=storage,
            limits=ImageLimits(settings.max_input_pixels, settings.max_output_dimension, settings.max_frames),
            pool=ThreadPoolExecutor(max_workers=4, thread_name_prefix="storage"),
            reaper=Reaper(storage),
        )
    return _context


def set_context(ctx: WorkerContext | None) -> None:
    """Install a context built elsewhere (tests: fakes instead of real clients)."""
    global _context
    _context = ctx
