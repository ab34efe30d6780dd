"""Completion webhooks: a signed POST of the job's status JSON to the client's ``callback_url``.

Delivery is its own RQ job on the ``<queue>-webhooks`` queue, served by its own
worker process, so a slow or dead receiver never holds up resizing; failures
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
import json
import logging
import time

import redis
from rq import Queue, Retry, get_current_job

from settings import Settings

from . import records
from .destinations import check_destination, post
from .worker import context

log = logging.getLogger("resizer.webhooks")
SENT_PREFIX = "resizer:webhook-sent:"
INTERVALS = [1, 5, 30, 120, 600]


def queue_name(settings: Settings) -> str:
    return f"{settings.queue_name}-webhooks"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def schedule(connection: redis.Redis, settings: Settings, token: str, tenant: str, url: str) -> None:
    """Queue the delivery (from the resize job, once it has ended)."""
    Queue(queue_name(settings), connection=connection).enqueue(
        "resizer.webhooks.deliver", token, tenant, url,
        job_id=f"webhook-{token}", retry=Retry(max=len(INTERVALS), interval=INTERVALS),
        job_timeout=settings.webhook_timeout * 3 + 10, result_ttl=settings.result_ttl,
        failure_ttl=settings.result_ttl, description=f"webhook for {token}",
    )


def deliver(token: str, tenant: str, url: str) -> int:
    """One delivery attempt; raising makes RQ retry it later."""
    ctx = context()
    settings = ctx.settings
    job = get_current_job()
    connection = job.connection if job is not None else None
    if connection is not None and connection.exists(SENT_PREFIX + token):
        return 0  # delivered already (the resize job was re-run after a crash)
    dest = check_destination(url, settings)  # checked again: the name may point elsewhere now
    record = (records.read_result(connection, token, tenant) if connection is not None else None) \
        or records.read_durable(ctx.storage, tenant, token)
    if record is None:
        raise RuntimeError(f"job {token} has no final record yet; will retry")
    body = records.render(token, record, ctx.storage.presigned_url, settings.presigned_url_ttl)
    payload = json.dumps(body, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    # Connect to the address that was just checked (Host header and TLS name stay the URL's):
    # a second DNS lookup by the HTTP client could be answered with a private address.
    status = post(dest, payload, timeout=settings.webhook_timeout,
                  headers={"Content-Type": "application/json", "User-Agent": "resizer-webhooks/1",
                           "X-Resizer-Timestamp": timestamp, "X-Resizer-Token": token,
                           "X-Resizer-Signature": sign(settings.webhook_secret, timestamp, payload)})
    if not 200 <= status < 300:
        raise RuntimeError(f"callback {url} answered {status}; will retry")
    if connection is not None:
        connection.set(SENT_PREFIX + token, timestamp, ex=settings.result_ttl)
    log.info("webhook for job %s delivered to %s (%d)", token, dest.host, status)
    return status
