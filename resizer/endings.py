"""The one way a job ends: ``end()``.

Success, a permanent failure, a timeout, a transient failure on the last
attempt and a worker lost on the last attempt all end here, in the same order:

1. the durable record in storage (the answer outlives Redis);
2. the published result in Redis (wakes long-polling clients);
3. the metric (``success`` or ``failure`` with the error's code);
4. the completion webhook, queued (delivered by its own worker);
5. the original, handed to the reaper (no attempt will need it again).

In a worker, a success's publishing (2, with the metric and 4) goes out in RQ's
own ending of the job, one transaction (``worker.JobEnding``), and 5 follows it.

A success whose durable record cannot be written has not ended: the error
propagates and the job is retried (outputs are idempotent).  A failure is
recorded as far as it can be: each step that fails is logged and the next
one still runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import redis

from settings import Settings

from . import originals, records, webhooks
from .clock import isoformat, utcnow
from .errors import ResizerError
from .metrics import record_job
from .reaper import Reaper
from .storage import Storage, original_key

log = logging.getLogger("resizer.worker")


class Recorder(Protocol):
    """What an ending needs (a worker's context has it; the API builds one to end reused work)."""

    settings: Settings
    storage: Storage
    reaper: Reaper | None

    def join_ending(self, commands: Callable[[Any], None], after: Callable[[], None]) -> bool:
        """Queue ``commands`` (Redis commands, on the pipeline given) in the transaction that ends the job for its
        queue, and run ``after`` once that went through; False if there is none to join (then the caller sends
        them itself). A worker's is RQ's ending of the job it runs (``worker.JobEnding``)."""


def end(ctx: Recorder, job, token: str, tenant: str, callback_url: str | None,
        record: dict[str, Any], stages: dict[str, float] | None = None, original: str | None = None,
        connection: redis.Redis | None = None, durable: bool = False) -> dict[str, Any]:
    """Every ending goes through here; ``record["status"]`` is SUCCESS or FAILURE.  Returns the record.

    ``original``: where the job's original was found ("redis", "storage"), None when not known,
    "none" when there is none (reused work).  ``connection``: Redis, when there is no RQ ``job``.
    ``durable``: the record is in storage already (on the outputs).
    """
    connection = connection if connection is not None else (job.connection if job is not None else None)
    success = record["status"] == "SUCCESS"
    recorded = True
    try:
        if not durable:
            records.write_durable(ctx.storage, tenant, token, record)
    except ResizerError as exc:
        if success:
            raise  # not ended: retried (outputs are idempotent), or failed as storage_unavailable
        log.warning("job %s: could not store the failure record: %s", token, exc.message)
        recorded = False
    error = record.get("error") or {}
    # Once recorded, no attempt will need the original again: a Redis-carried one is released in the same
    # round trip as the result.
    release = recorded and original in (None, "redis")
    publication = (token, tenant, record, ctx.settings.result_ttl,
                   ("success" if success else "failure", error.get("code", ""), stages or {}), release)

    def then(released: bool, webhook: bool = True) -> None:
        if webhook:
            _webhook(ctx, connection, token, tenant, callback_url)
        if recorded:
            if not released and original in (None, "storage") and ctx.reaper is not None:
                ctx.reaper.add(original_key(token))
        else:
            # Nothing outside Redis says how it ended: keep the original, so that if Redis forgets
            # the job the status still knows of it and the reconciler runs it again.
            log.warning("job %s: original kept until its failure can be recorded", token)

    def joined(pipe) -> None:
        _queue_publication(pipe, *publication)
        if callback_url:
            webhooks.schedule(connection, ctx.settings, token, tenant, callback_url, pipeline=pipe)

    # A success joins the transaction that ends the job for RQ (in a worker), its webhook too: no write of its
    # own, and no moment where the job is finished but its webhook not yet queued. If that transaction fails,
    # RQ retries the job (outputs are idempotent) or, on the last attempt, its on_failure publishes the success
    # recorded in storage. A failure publishes by itself: RQ lets a failure's ending fail quietly.
    if success and connection is not None and ctx.join_ending(joined, lambda: then(original == "redis", False)):
        return record
    then(_publish(connection, *publication))
    return record


def succeed(ctx: Recorder, job, token: str, tenant: str, callback_url: str | None,
            record: dict[str, Any], stages: dict[str, float], original: str | None = None,
            durable: bool = False) -> dict[str, Any]:
    """End the job with its outputs (``record`` has ``variants``, times, ...)."""
    return end(ctx, job, token, tenant, callback_url, {"status": "SUCCESS", **record}, stages, original,
               durable=durable)


def fail(ctx: Recorder, job, token: str, tenant: str, callback_url: str | None, error: ResizerError,
         created_at: str | None) -> dict[str, Any]:
    """End the job as FAILURE with ``error``: no retry after this."""
    log.info("job %s failed: %s: %s", token, error.code, error.message)
    if job is not None:
        job.retries_left = 0  # read by RQ when it handles the exception the job raises next
    note(job, error)
    record = {"status": "FAILURE", "created_at": created_at, "finished_at": isoformat(utcnow()),
              "error": error.to_dict()}
    return end(ctx, job, token, tenant, callback_url, record)


def note(job, error: ResizerError) -> None:
    """Keep the latest error on RQ's job (shown while a retry waits, and by rq-dashboard)."""
    if job is None:
        return
    job.meta["error"] = error.to_dict()
    try:
        job.save_meta()
    except redis.exceptions.RedisError as exc:
        log.warning("job %s: could not save the error: %s", job.id, exc)


def metric(job, outcome: str, code: str, stages: dict[str, float]) -> None:
    if job is None:
        return
    try:
        record_job(job.connection, outcome, code, stages)
    except redis.exceptions.RedisError as exc:  # metrics must never fail a job
        log.warning("metrics not recorded: %s", exc)


def _queue_publication(pipe, token: str, tenant: str, record: dict[str, Any], ttl: int, outcome: tuple,
                       release: bool) -> None:
    """The result (waking waiting clients), the metric and, with ``release``, the release of the original from
    Redis (its reply last)."""
    records.publish(pipe, token, tenant, record, ttl)
    record_job(pipe, *outcome)
    if release:
        originals.release_from_redis(pipe, token)


def _publish(connection, token: str, tenant: str, record: dict[str, Any], ttl: int, outcome: tuple,
             release: bool) -> bool:
    """The publication in one round trip of its own.  True if an original was released from Redis."""
    if connection is None:
        return False
    try:
        with connection.pipeline() as pipe:
            _queue_publication(pipe, token, tenant, record, ttl, outcome, release)
            replies = pipe.execute()
        return release and bool(replies[-1])
    except redis.exceptions.RedisError as exc:
        log.warning("job %s: result not published: %s", token, exc)
    if not release:
        return False
    try:  # on its own, so a failed publish does not keep the original (and its share of the budget) for days
        return bool(originals.release_from_redis(connection, token))
    except redis.exceptions.RedisError as exc:  # the key expires; the reconciler corrects the budget's meter
        log.warning("job %s: original not released from Redis: %s", token, exc)
        return False


def _webhook(ctx: Recorder, connection, token: str, tenant: str, callback_url: str | None) -> None:
    """Queue the completion webhook; its delivery (and retries) never runs in this job."""
    if not callback_url or connection is None:
        return
    try:
        webhooks.schedule(connection, ctx.settings, token, tenant, callback_url)
    except redis.exceptions.RedisError as exc:
        log.warning("job %s: webhook not queued: %s", token, exc)
