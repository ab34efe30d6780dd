"""One webhook delivery attempt, run by the webhooks worker (see ``webhooks`` for the protocol)."""

from __future__ import annotations

import json
import logging
import time

from rq import get_current_job

from . import records
from .destinations import check_destination, post
from .webhooks import SENT_PREFIX, sign
from .worker import context

log = logging.getLogger("resizer.webhooks")


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
