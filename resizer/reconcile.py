"""Queue again the jobs Redis lost.

An accepted job's original waits in storage with the job's arguments (see
``originals``) until the job ends.  If Redis loses the job (killed in the second
before its append-only file reached disk, a failover to a replica that lagged,
a Redis that came back empty), nothing would ever run it.  Workers look for
such originals during their maintenance: an original older than
``RECONCILE_GRACE`` seconds with neither a job nor a final record in Redis, nor
a durable record in storage, has its job queued again under the same token.
Outputs are idempotent, so a job that was in fact still running is harmless.
One worker at a time does this, at most every ``RECONCILE_INTERVAL`` seconds.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from rq import Queue
from rq.exceptions import DuplicateJobError
from rq.job import Job

from settings import Settings

from . import originals, records
from .clock import utcnow
from .queueing import enqueue_resize
from .storage import Storage, original_key

log = logging.getLogger("resizer.reconcile")
LOCK = "resizer:reconcile-lock"


def reconcile(connection: redis.Redis, storage: Storage, settings: Settings, *, force: bool = False) -> list[str]:
    """Queue again every lost job; the tokens queued.  Without ``force``, at most once an interval."""
    if not force and not connection.set(LOCK, "1", nx=True, ex=settings.reconcile_interval):
        return []  # another worker looked recently
    originals.correct_meter(connection)
    queue = Queue(settings.queue_name, connection=connection)
    cutoff = utcnow() - timedelta(seconds=settings.reconcile_grace)
    candidates = [token for token, stored in originals.listed(storage) if stored <= cutoff]
    requeued: list[str] = []
    for token in candidates:
        if connection.exists(Job.key_for(token), records.RESULT_PREFIX + token):
            continue  # queued, running, retrying or ended: Redis knows it
        job = originals.waiting(storage, token)
        if job is None:
            continue  # deleted meanwhile, or not one of ours: the lifecycle rule collects strays
        if records.read_durable(storage, job.tenant, token, rebuild=False) is not None:
            storage.delete(original_key(token))  # ended, and its original was never reaped
            continue
        try:
            enqueue_resize(queue, settings, token, job.tenant, job.spec, job.request_id, unique=True)
        except DuplicateJobError:
            continue  # queued by someone else since we looked
        log.warning("job %s was lost by Redis; queued it again from its original in storage", token)
        requeued.append(token)
    if requeued:
        log.warning("reconcile: queued %d lost job(s) again", len(requeued))
    return requeued
