"""Completion webhooks: a signed POST of the job's status JSON to the client's ``callback_url``.

Delivery (``delivery.deliver``) is its own RQ job on the ``<queue>-webhooks`` queue,
served by its own worker process, so a slow or dead receiver never holds up resizing; failures
are retried with backoff (1 s, 5 s, 30 s, 2 min, 10 min).  Each delivery is
signed: ``X-Resizer-Signature: sha256=HMAC_SHA256(WEBHOOK_SECRET, "<timestamp>.<body>")``
with the timestamp in ``X-Resizer-Timestamp``.

Destinations that resolve to loopback, private, link-local or otherwise
non-public addresses are refused (at submit and again before each attempt)
unless ``WEBHOOK_ALLOWLIST`` names the host or network; each attempt connects
to the address it checked (``destinations``), so DNS rebinding cannot redirect it.
"""

from __future__ import annotations

import hashlib
import hmac

import redis
from rq import Queue, Retry

from settings import Settings

SENT_PREFIX = "resizer:webhook-sent:"
INTERVALS = [1, 5, 30, 120, 600]


def queue_name(settings: Settings) -> str:
    return f"{settings.queue_name}-webhooks"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def schedule(connection: redis.Redis, settings: Settings, token: str, tenant: str, url: str, pipeline=None) -> None:
    """Queue the delivery (by whatever ended the job: a worker, or the API for reused work); with ``pipeline``,
    queued on it (the caller sends it: a worker's ending of the job)."""
    Queue(queue_name(settings), connection=connection).enqueue(
        "resizer.delivery.deliver", token, tenant, url,
        job_id=f"webhook-{token}", retry=Retry(max=len(INTERVALS), interval=INTERVALS),
        job_timeout=settings.webhook_timeout * 3 + 10, result_ttl=settings.result_ttl,
        failure_ttl=settings.result_ttl, description=f"webhook for {token}", pipeline=pipeline,
    )
