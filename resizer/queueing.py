"""How a resize job is put on the queue: task names, retry policy, options of the RQ job.

The API enqueues at submit; the reconciler enqueues again (same token, same
arguments) a job that Redis lost.  Both go through ``enqueue_resize`` so the
two can never differ.  Jobs are enqueued by dotted path: the web process never
imports the imaging code.
"""

from __future__ import annotations

from typing import Any

from rq import Callback, Queue, Retry
from rq.job import Dependency

from settings import Settings

TASK = "resizer.tasks.resize_job"
ON_FAILURE = "resizer.tasks.on_failure"  # RQ calls it for any failure, incl. a worker that died
RETRY_INTERVALS = (2, 10, 30, 60, 120)


def retry_policy(settings: Settings) -> Retry | None:
    """Transient failures are retried with a growing pause: 2 s, 10 s, 30 s, ..."""
    if settings.job_retries == 0:
        return None
    return Retry(max=settings.job_retries, interval=list(RETRY_INTERVALS[: settings.job_retries]))


def enqueue_resize(queue: Queue, settings: Settings, token: str, tenant: str, spec: dict[str, Any],
                   request_id: str | None, *, unique: bool = False, pipeline=None, original: str = "storage",
                   follows: str | None = None) -> None:
    """Queue the job for ``token`` (also its job id): arguments are small, never image bytes.

    ``unique``: raise ``rq.exceptions.DuplicateJobError`` if the job exists already.
    """
    outputs = len(spec["outputs"])
    meta = {"tenant": tenant, "request_id": request_id, "original": original}  # original: where the image waits
    if follows:  # identical work is under way: wait for it (even if it fails) and reuse its outputs
        meta["follows"] = follows
    queue.enqueue(
        TASK,
        token,
        tenant,
        spec,
        request_id,
        job_id=token,
        job_timeout=settings.job_timeout,
        result_ttl=settings.result_ttl,
        failure_ttl=settings.result_ttl,
        ttl=None,
        retry=retry_policy(settings),
        on_failure=Callback(ON_FAILURE),
        meta=meta,
        depends_on=Dependency(jobs=[follows], allow_failure=True) if follows else None,
        description=f"resize {token} ({outputs} output{'s' if outputs > 1 else ''})",
        unique=unique,  # the reconciler must never duplicate a job that exists
        pipeline=pipeline,  # the API queues the job in the transaction that stores a small original
    )
