"""The job the worker runs: fetch original -> pipeline -> upload outputs -> end.

Idempotent: output keys are derived from the token and variant name, so a
re-run (after a retry or a killed worker) overwrites the same objects.  A
re-run that finds the original already gone but a successful record present
returns that record: the earlier run finished and only its bookkeeping was lost.

Errors are classified once, here.  Permanent ones (the image's fault), a
timeout, a bug, and a transient one on the last attempt end the job through
``endings.fail``; a transient one (storage, Redis) with attempts left
propagates so RQ retries it with backoff.  A worker that dies on the last
attempt is ended by ``on_failure``, which RQ's maintenance calls.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

import redis
from rq import get_current_job
from rq.exceptions import AbandonedJobError
from rq.timeouts import JobTimeoutException

from . import endings, originals, records, reuse, watermarks
from .clock import isoformat, utcnow
from .errors import CorruptImage, InternalError, ProcessingTimeout, ResizerError, ServiceUnavailable, WorkerLost
from .imaging import process
from .logs import request_id as request_id_var
from .options import JobSpec
from .storage import output_key
from .worker import WorkerContext, context

log = logging.getLogger("resizer.worker")


def resize_job(token: str, tenant: str, spec: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
    ctx = context()
    job = get_current_job()
    request_context = request_id_var.set(request_id or "-")
    try:
        return run(ctx, job, token, tenant, JobSpec.from_dict(spec), request_id)
    finally:
        request_id_var.reset(request_context)  # later lines of this worker belong to no request


def on_failure(job, connection, exc_type, exc_value, traceback) -> None:
    """RQ's failure callback, the safety net: end a job that failed for good without an ending.

    Failures raised inside the job end it themselves (their result is published
    by then).  When a worker is killed, RQ's maintenance finds the job abandoned
    and calls this; so does any failure that escaped the job's classification.
    A job whose ending was already published is left alone (a worker killed
    just after ending a job successfully must not turn it into a failure).  A
    success recorded in storage whose publishing was lost (it goes out with RQ's
    ending of the job, which failed on the last attempt) is published now.
    """
    if job.retries_left:
        return  # RQ will run it again
    token, tenant, spec, _request_id = job.args
    ctx = context()
    if records.read_result(connection, token, tenant) is not None:
        return
    earlier = records.read_durable(ctx.storage, tenant, token, rebuild=False)
    if earlier is not None:
        if earlier.get("status") == "SUCCESS":
            log.info("job %s: succeeded, but its ending did not reach Redis; publishing it", token)
            endings.end(ctx, job, token, tenant, JobSpec.from_dict(spec).callback_url, earlier, durable=True)
        return
    abandoned = isinstance(exc_type, type) and issubclass(exc_type, AbandonedJobError)
    error = WorkerLost() if abandoned else InternalError(f"Processing failed unexpectedly ({exc_type.__name__}).")
    log.warning("job %s: %s on the last attempt", token, "its worker died" if abandoned else "it failed")
    endings.fail(ctx, job, token, tenant, JobSpec.from_dict(spec).callback_url, error, isoformat(job.created_at))


def run(ctx: WorkerContext, job, token: str, tenant: str, spec: JobSpec, request_id: str | None) -> dict[str, Any]:
    """Run the job, classifying any failure once (see the module docstring)."""
    created_at = isoformat(job.created_at) if job is not None else None

    def fail(error: ResizerError) -> None:
        endings.fail(ctx, job, token, tenant, spec.callback_url, error, created_at)

    try:
        return _resize(ctx, job, token, tenant, spec, created_at, request_id)
    except JobTimeoutException:
        fail(ProcessingTimeout(f"Processing took longer than the {ctx.settings.job_timeout} s limit."))
        raise
    except ResizerError as exc:
        if exc.permanent or _last_attempt(job):
            fail(exc)
        else:
            log.warning("job %s: %s, will retry: %s", token, exc.code, exc.message)
            endings.note(job, exc)
            endings.metric(job, "retry", exc.code, {})
        raise
    except redis.exceptions.RedisError as exc:
        if _last_attempt(job):
            fail(ServiceUnavailable(f"The job queue (Redis) failed on the last attempt: {exc}"[:300]))
        else:
            log.warning("job %s: Redis error, will retry: %s", token, exc)
        raise
    except Exception as exc:
        # A bug (or a Pillow failure we did not foresee): retrying will not
        # help, and the client gets a stable code rather than a traceback.
        log.exception("job %s: unexpected error", token)
        fail(InternalError(f"Processing failed unexpectedly ({type(exc).__name__})."))
        raise


def _last_attempt(job) -> bool:
    return job is None or not job.retries_left


def _resize(ctx: WorkerContext, job, token: str, tenant: str, spec: JobSpec, created_at: str | None,
            request_id: str | None) -> dict[str, Any]:
    follows = job.meta.get("follows") if job is not None else None
    if follows:
        earlier = records.read_result(job.connection, follows, tenant) or records.read_durable(ctx.storage, tenant,
                                                                                                follows)
        if earlier is not None and earlier.get("status") == "SUCCESS":
            log.info("job %s: the same work was done by job %s; reusing its outputs", token, follows)
            return endings.succeed(ctx, job, token, tenant, spec.callback_url,
                                   reuse.reused(earlier, created_at, isoformat(utcnow())), {})
        log.info("job %s: job %s did not succeed; doing the work", token, follows)
    t0 = time.perf_counter()
    in_redis = job is not None and originals.in_redis(job.meta)
    found = originals.fetch(ctx.storage, token, job.connection if in_redis else None, ctx.take_original(token))
    if found is None:
        earlier = records.read_durable(ctx.storage, tenant, token)
        if earlier is not None and earlier.get("status") == "SUCCESS":
            # An earlier run ended it; its publishing may have been lost with Redis: end it again
            # (idempotent: same record, and the webhook is sent once).
            log.info("job %s: already finished by an earlier run", token)
            return endings.end(ctx, job, token, tenant, spec.callback_url, earlier, original="none", durable=True)
        raise CorruptImage("The uploaded image is no longer in storage; submit it again.")
    data, where = found
    t1 = time.perf_counter()
    stats: dict[str, float] = {}
    result = process(data, spec, ctx.limits, stats, watermarks=watermarks.fetch(ctx.storage, tenant, spec))
    outputs = result.outputs
    t2 = time.perf_counter()
    keys = [output_key(tenant, token, out.name, out.format.ext) for out in outputs]
    variants = {
        out.name: {"key": key, "width": out.width, "height": out.height, "format": out.format.name,
                   "bytes": len(out.data)}
        for key, out in zip(keys, outputs)
    }
    record = {"status": "SUCCESS", "created_at": created_at, "finished_at": isoformat(utcnow()),
              "variants": variants, "source": asdict(result.source), "placeholder": asdict(result.placeholder),
              "reused": False}
    # Storage round trips are most of a small job's time: outputs go up in parallel, each
    # carrying the whole record, which then needs no object of its own (see records).
    packed = records.pack(record)
    meta = {records.RECORD_META: packed} if packed else None
    _all(ctx, [(ctx.storage.put, key, out.data, out.format.mime, None, meta) for key, out in zip(keys, outputs)])
    stages = {"download": t1 - t0, "decode_resize": t2 - t1 - stats.get("encode", 0.0),
              "encode": stats.get("encode", 0.0)}
    if job is not None and job.enqueued_at and job.started_at:
        stages["queue_wait"] = max(0.0, (job.started_at - job.enqueued_at).total_seconds())
    stages["upload"] = time.perf_counter() - t2
    record = endings.succeed(ctx, job, token, tenant, spec.callback_url, record, stages, where,
                             durable=packed is not None)
    log.info(
        "job %s done: %d output(s), %d bytes in; fetch %.1f ms, process %.1f ms, store %.1f ms (request %s)",
        token, len(outputs), len(data), (t1 - t0) * 1e3, (t2 - t1) * 1e3, (time.perf_counter() - t2) * 1e3,
        request_id or "-",
    )
    return record


def _all(ctx: WorkerContext, calls: list[tuple]) -> None:
    """Run the calls concurrently; re-raise the first error (after all have ended)."""
    if len(calls) == 1:
        fn, *args = calls[0]
        fn(*args)
        return
    futures = [ctx.pool.submit(fn, *args) for fn, *args in calls]
    for future in futures:
        future.result()
