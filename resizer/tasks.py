"""The job the worker runs: fetch original -> pipeline -> upload outputs -> manifest.

Idempotent: output keys are derived from the token and variant name, so a
re-run (after a retry or a killed worker) overwrites the same objects.  A
re-run that finds the original already gone but the manifest present returns
the manifest: the earlier run finished and only its bookkeeping was lost.

Errors are classified once here.  Permanent ones (the image's fault) end the
job at once: no retry, a failure manifest so the answer outlives Redis, the
original handed to the reaper for deletion.  Transient ones (storage, Redis)
propagate so RQ retries them with backoff.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
from rq import get_current_job
from rq.exceptions import AbandonedJobError
from rq.timeouts import JobTimeoutException

from settings import Settings

from . import webhooks
from .errors import CorruptImage, InternalError, ProcessingTimeout, ResizerError, WorkerLost
from .imaging import ImageLimits, process
from .jobs import isoformat, publish_result, utcnow
from .logs import request_id as request_id_var
from .metrics import record_job
from .options import JobSpec
from .reaper import Reaper
from .storage import Storage, manifest_key, original_key, output_key

log = logging.getLogger("resizer.worker")


@dataclass
class WorkerContext:
    settings: Settings
    storage: Storage
    limits: ImageLimits
    pool: ThreadPoolExecutor  # for concurrent storage calls within a job
    reaper: Reaper  # deletes finished jobs' originals in batches


_context: WorkerContext | None = None


def context() -> WorkerContext:
    """Clients and settings built once per worker process, not once per job."""
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


def resize_job(token: str, tenant: str, spec: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
    ctx = context()
    job = get_current_job()
    created_at = isoformat(job.created_at) if job is not None else None
    request_context = request_id_var.set(request_id or "-")
    job_spec = JobSpec.from_dict(spec)
    try:
        return _resize(ctx, job, token, tenant, job_spec, created_at, request_id)
    finally:
        request_id_var.reset(request_context)  # later lines of this worker belong to no request


def on_failure(job, connection, exc_type, exc_value, traceback) -> None:
    """RQ's failure callback: finish the record of a job whose worker died on its last attempt.

    Failures raised inside the job are recorded by the job itself.  When a
    worker is killed, RQ's maintenance finds the job abandoned and calls this;
    on the final attempt the job ends here, so it gets what every other
    ending gets: a failure manifest (the answer outlives Redis), the result
    that wakes waiting clients, metrics, and its webhook.
    """
    if not (isinstance(exc_type, type) and issubclass(exc_type, AbandonedJobError)) or job.retries_left:
        return
    ctx = context()
    token, tenant, spec, _request_id = job.args
    log.warning("job %s: its worker died on the last attempt", token)
    _fail(ctx, job, token, tenant, WorkerLost(), isoformat(job.created_at))
    _callback(ctx, job, token, tenant, JobSpec.from_dict(spec))


def _resize(ctx: WorkerContext, job, token: str, tenant: str, job_spec: JobSpec, created_at: str | None,
            request_id: str | None) -> dict[str, Any]:
    """Run the job, classifying any failure once (see the module docstring)."""
    try:
        manifest = _run(ctx, job, token, tenant, job_spec, created_at, request_id)
        _callback(ctx, job, token, tenant, job_spec)
        return manifest
    except JobTimeoutException:
        error: ResizerError = ProcessingTimeout(
            f"Processing took longer than the {ctx.settings.job_timeout} s limit."
        )
        _fail(ctx, job, token, tenant, error, created_at)
        _callback(ctx, job, token, tenant, job_spec)
        raise
    except ResizerError as exc:
        if exc.permanent:
            _fail(ctx, job, token, tenant, exc, created_at)
            _callback(ctx, job, token, tenant, job_spec)
        else:
            _note(job, exc)
            _metrics(job, "retry", exc.code, {})
            if job is not None and not job.retries_left:
                _callback(ctx, job, token, tenant, job_spec)  # the last attempt: the job ends here
        raise
    except redis.exceptions.RedisError as exc:
        log.warning("job %s: Redis error, will retry: %s", token, exc)
        raise
    except Exception as exc:
        # A bug (or a Pillow failure we did not foresee): retrying will not
        # help, and the client gets a stable code rather than a traceback.
        log.exception("job %s: unexpected error", token)
        _fail(ctx, job, token, tenant, InternalError(f"Processing failed unexpectedly ({type(exc).__name__})."), created_at)
        _callback(ctx, job, token, tenant, job_spec)
        raise


def _run(
    ctx: WorkerContext, job, token: str, tenant: str, spec: JobSpec, created_at: str | None, request_id: str | None
) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = ctx.storage.get(original_key(token))
    if data is None:
        earlier = ctx.storage.get(manifest_key(tenant, token))
        if earlier is not None and json.loads(earlier).get("status") == "SUCCESS":
            log.info("job %s: already finished by an earlier run", token)
            return json.loads(earlier)
        raise CorruptImage("The uploaded image is no longer in storage; submit it again.")
    t1 = time.perf_counter()
    stats: dict[str, float] = {}
    outputs = process(data, spec, ctx.limits, stats)
    t2 = time.perf_counter()
    keys = [output_key(tenant, token, out.name, out.format.ext) for out in outputs]
    # Storage round trips are most of a small job's time: outputs go up in
    # parallel, then the manifest and the Redis result together (the manifest
    # only once every output it names exists); the original goes to the
    # reaper, which deletes many in one request.
    _all(ctx, [(ctx.storage.put, key, out.data, out.format.mime) for key, out in zip(keys, outputs)])
    variants = {
        out.name: {"key": key, "width": out.width, "height": out.height, "format": out.format.name,
                   "bytes": len(out.data)}
        for key, out in zip(keys, outputs)
    }
    manifest = {"status": "SUCCESS", "created_at": created_at, "finished_at": isoformat(utcnow()), "variants": variants}
    _all(ctx, [(_write_manifest, ctx, tenant, token, manifest),
               (_publish, job, tenant, token, manifest, ctx.settings.result_ttl)])
    ctx.reaper.add(original_key(token))
    t3 = time.perf_counter()
    stages = {"download": t1 - t0, "decode_resize": t2 - t1 - stats.get("encode", 0.0),
              "encode": stats.get("encode", 0.0), "upload": t3 - t2}
    if job is not None and job.enqueued_at and job.started_at:
        stages["queue_wait"] = max(0.0, (job.started_at - job.enqueued_at).total_seconds())
    _metrics(job, "success", "", stages)
    log.info(
        "job %s done: %d output(s), %d bytes in; fetch %.1f ms, process %.1f ms, store %.1f ms (request %s)",
        token, len(outputs), len(data), (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, request_id or "-",
    )
    return manifest


def _all(ctx: WorkerContext, calls: list[tuple]) -> None:
    """Run the calls concurrently; re-raise the first error (after all have ended)."""
    if len(calls) == 1:
        fn, *args = calls[0]
        fn(*args)
        return
    futures = [ctx.pool.submit(fn, *args) for fn, *args in calls]
    for future in futures:
        future.result()


def _publish(job, tenant: str, token: str, record: dict[str, Any], ttl: int) -> None:
    if job is not None:
        publish_result(job.connection, token, tenant, record, ttl)


def _callback(ctx: WorkerContext, job, token: str, tenant: str, spec: JobSpec) -> None:
    """Queue the completion webhook; its delivery (and retries) never runs in this job."""
    if not spec.callback_url or job is None:
        return
    try:
        webhooks.schedule(job.connection, ctx.settings, token, tenant, spec.callback_url)
    except redis.exceptions.RedisError as exc:
        log.warning("job %s: webhook not queued: %s", token, exc)


def _metrics(job, outcome: str, code: str, stages: dict[str, float]) -> None:
    if job is None:
        return
    try:
        record_job(job.connection, outcome, code, stages)
    except redis.exceptions.RedisError as exc:  # metrics must never fail a job
        log.warning("metrics not recorded: %s", exc)


def _fail(ctx: WorkerContext, job, token: str, tenant: str, error: ResizerError, created_at: str | None) -> None:
    """End the job now: no retries, and a record of why that outlives Redis."""
    log.info("job %s failed: %s: %s", token, error.code, error.message)
    _metrics(job, "failure", error.code, {})
    if job is not None:
        job.retries_left = 0
    _note(job, error)
    manifest = {"status": "FAILURE", "created_at": created_at, "finished_at": isoformat(utcnow()), "error": error.to_dict()}
    ctx.reaper.add(original_key(token))  # not retried, so not needed again, whatever happens below
    try:
        _write_manifest(ctx, tenant, token, manifest)
        _publish(job, tenant, token, manifest, ctx.settings.result_ttl)
    except (ResizerError, redis.exceptions.RedisError) as exc:
        log.warning("job %s: could not record the failure: %s", token, exc)


def _note(job, error: ResizerError) -> None:
    if job is None:
        return
    job.meta["error"] = error.to_dict()
    try:
        job.save_meta()
    except redis.exceptions.RedisError as exc:
        log.warning("job %s: could not save the error: %s", job.id, exc)


def _write_manifest(ctx: WorkerContext, tenant: str, token: str, manifest: dict[str, Any]) -> None:
    ctx.storage.put(manifest_key(tenant, token), json.dumps(manifest).encode(), "application/json")
