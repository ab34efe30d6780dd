"""Completion webhooks: a signed POST of the job's status JSON to the client's ``callback_url``.

Delivery is its own RQ job on the ``<queue>-webhooks`` queue, served by its own
worker process, so a slow or dead receiver never holds up resizing; failures
are retried with backoff (1 s, 5 s, 30 s, 2 min, 10 min).  Each delivery is
signed: ``X-Resizer-Signature: sha256=HMAC_SHA256(WEBHOOK_SECRET, "<timestamp>.<body>")``
with the timestamp in ``X-Resizer-Timestamp``.

Destinations that resolve to loopback, private, link-local or otherwise
non-public addresses are refused (at submit and again before each attempt,
against DNS rebinding) unless ``WEBHOOK_ALLOWLIST`` names the host or network.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from urllib.parse import urlparse

import redis
import requests
from rq import Queue, Retry, get_current_job

from settings import Settings

from . import records
from .errors import InvalidParameter
from .worker import context

log = logging.getLogger("resizer.webhooks")
SENT_PREFIX = "resizer:webhook-sent:"
INTERVALS = [1, 5, 30, 120, 600]


def queue_name(settings: Settings) -> str:
    return f"{settings.queue_name}-webhooks"


def check_destination(url: str, settings: Settings) -> None:
    """Refuse URLs that are not http(s) or that resolve to a non-public address (SSRF)."""
    try:
        parsed = urlparse(url)
        host, port = parsed.hostname, parsed.port  # both raise ValueError on malformed URLs
    except ValueError:
        host = port = None
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not host:
        raise InvalidParameter("Invalid parameter 'callback_url': it must be a valid http(s) URL.")
    if not settings.webhook_secret:
        raise InvalidParameter("Invalid parameter 'callback_url': webhooks are not enabled on this service.")
    allow = [a.strip() for a in settings.webhook_allowlist.split(",") if a.strip()]
    if host in allow:
        return
    try:
        infos = socket.getaddrinfo(host, port or (443 if parsed.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError, ValueError):  # gaierror, IDNA errors, embedded NULs
        raise InvalidParameter(f"Invalid parameter 'callback_url': the host {host} does not resolve.") from None
    networks = []
    for item in allow:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            pass
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if any(address in net for net in networks):
            continue
        if not address.is_global or address.is_multicast:
            raise InvalidParameter(
                f"Invalid parameter 'callback_url': {host} resolves to a non-public address ({address}); "
                "callbacks may only go to public hosts."
            )


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
    check_destination(url, settings)
    record = (records.read_result(connection, token, tenant) if connection is not None else None) \
        or records.read_durable(ctx.storage, tenant, token)
    if record is None:
        raise RuntimeError(f"job {token} has no final record yet; will retry")
    body = records.render(token, record, ctx.storage.presigned_url, settings.presigned_url_ttl)
    payload = json.dumps(body, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    response = requests.post(
        url, data=payload, timeout=settings.webhook_timeout, allow_redirects=False,
        headers={"Content-Type": "application/json", "User-Agent": "resizer-webhooks/1",
                 "X-Resizer-Timestamp": timestamp, "X-Resizer-Token": token,
                 "X-Resizer-Signature": sign(settings.webhook_secret, timestamp, payload)},
    )
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"callback {url} answered {response.status_code}; will retry")
    if connection is not None:
        connection.set(SENT_PREFIX + token, timestamp, ex=settings.result_ttl)
    log.info("webhook for job %s delivered to %s (%d)", token, urlparse(url).hostname, response.status_code)
    return response.status_code
