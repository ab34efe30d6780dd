"""The HTTP edge: routes, upload modes, status mapping.  Nothing here touches pixels."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlparse

import redis
from flask import Blueprint, Response, current_app, g, jsonify, request, url_for

from .errors import InvalidParameter, ResizerError, ServiceUnavailable
from .intake import WAIT, inspect, read_upload
from .jobs import MAX_WAIT
from .openapi import build as build_openapi
from .options import Limits, parse_options
from .destinations import check_destination
from .security import tenant as current_tenant
from .watermarks import check_names as check_watermarks

log = logging.getLogger("resizer.api")

bp = Blueprint("api", __name__)

UNFINISHED = ("PENDING", "IN_PROGRESS")

# Pages load their own script and style only; nothing from other origins.
PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"


def _service():
    return current_app.extensions["resizer"]


@bp.post("/api/v1/resize")
def submit() -> tuple[Response, int]:
    svc = _service()
    settings = svc.settings
    wait = _wait_seconds(request.args.get(WAIT))  # checked before the body is read
    upload = read_upload(request)
    spec = parse_options(upload.options, Limits(settings.max_output_dimension, settings.max_variants))
    if spec.callback_url:
        check_destination(spec.callback_url, settings)
    marks = check_watermarks(svc.storage, current_tenant(), spec)
    content_type = inspect(upload.data, settings.max_input_pixels)
    submission = svc.jobs.submit(
        upload.data,
        content_type,
        spec,
        tenant=current_tenant(),
        idempotency_key=_idempotency_key(request.headers.get("Idempotency-Key")),
        request_id=g.get("request_id"),
        watermarks=marks,
    )
    status_url = url_for("api.status", token=submission.token)
    log.info(
        "accepted %s: %d bytes, %d output(s)%s",
        submission.token, len(upload.data), len(spec.outputs), "" if submission.created else " (idempotent replay)",
    )
    ended = _ended_within(svc.jobs, submission, wait) if wait else None
    if ended is not None:
        response = jsonify({**ended, "status_url": status_url})
        response.headers["Location"] = status_url
        response.headers["Cache-Control"] = "private, no-cache"
        return response, 201
    response = jsonify(success=True, token=submission.token, status_url=status_url)
    response.headers["Location"] = status_url
    return response, 202


@bp.get("/api/v1/resize/<token>")
def status(token: str) -> Response:
    raw_wait = request.args.get(WAIT)
    # Without ?wait=, an unfinished job's status is still held briefly (STATUS_HOLD_MS) for its end:
    # a client that polls every few milliseconds then makes a few requests per job, not dozens.
    wait = _wait_seconds(raw_wait) if raw_wait is not None else _service().settings.status_hold_ms / 1000
    body = _status(_service().jobs, token, wait)
    response = jsonify(body)
    if body["status"] in UNFINISHED:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Retry-After"] = "1"
    else:
        response.headers["Cache-Control"] = "private, no-cache"
    return response


def _ended_within(jobs, submission, wait: float) -> dict | None:
    """POST ?wait=: the job's status if it ends within ``wait`` seconds, else None (the usual 202).

    One request instead of a POST and a long poll. A job queued just now has not ended, so it goes straight to
    waiting for its end's announcement; a replayed or reused one may have ended already (a replay's announcement
    may be long gone), so it is read first, as a status request does. The job is accepted by now: Redis or storage
    failing during the wait must not turn its 202 into an error (the client would never learn its token).
    """
    g.wait_started = time.perf_counter()  # the request's latency metric ends here: the rest is the job's time
    try:
        body = (jobs.status_after_wait(submission.token, current_tenant(), wait) if submission.queued
                else _status(jobs, submission.token, wait))
    except (redis.exceptions.RedisError, ResizerError) as exc:
        log.warning("job %s: accepted, but its end could not be awaited (%s); answering 202", submission.token,
                    getattr(exc, "message", exc.__class__.__name__))
        return None
    return None if body["status"] in UNFINISHED else body


def _status(jobs, token: str, wait: float) -> dict:
    """The job's status now or, if it is unfinished and ``wait`` > 0, once it ends (at most ``wait`` s later)."""
    tenant = current_tenant()
    body = jobs.status(token, tenant)
    if wait and body["status"] in UNFINISHED:
        # Long poll: one request instead of many while the job runs.
        body = jobs.status_after_wait(token, tenant, wait)
    return body


def _idempotency_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not 1 <= len(raw) <= 255 or not all(" " <= c <= "~" for c in raw):
        raise InvalidParameter("Invalid parameter 'Idempotency-Key': it must be 1 to 255 printable ASCII characters.")
    return raw


def _wait_seconds(raw: str | None) -> float:
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_WAIT:
        raise InvalidParameter(f"Invalid parameter 'wait': it must be a number of seconds from 0 to {MAX_WAIT}.")
    return value


@bp.get("/api/v1/openapi.json")
def openapi() -> Response:
    settings = _service().settings
    return jsonify(build_openapi(Limits(settings.max_output_dimension, settings.max_variants)))


@bp.get("/")
def index() -> Response:
    """The upload page; results are shown straight from storage, so its origin may serve images."""
    storage = _service().settings.presign_endpoint_url or ""
    origin = "{0.scheme}://{0.netloc}".format(urlparse(storage)) if storage else ""
    response = current_app.send_static_file("index.html")
    response.headers["Content-Security-Policy"] = PAGE_CSP.replace("img-src 'self' data: blob:",
                                                                   f"img-src 'self' data: blob: {origin}".rstrip())
    return response


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    svc = _service()
    checks = {}
    try:
        svc.redis.ping()
        checks["redis"] = "ok"
    except redis.exceptions.RedisError as exc:
        checks["redis"] = f"unreachable: {str(exc)[:120]}"
    try:
        svc.storage.ping()
        checks["storage"] = "ok"
    except ResizerError as exc:
        checks["storage"] = f"unreachable: {exc.message}"
    if all(v == "ok" for v in checks.values()):
        return jsonify(status="ready", checks=checks), 200
    down = ", ".join(k for k, v in checks.items() if v != "ok")
    error = ServiceUnavailable(f"Not ready: {down} unreachable.")
    response = jsonify(success=False, error=error.to_dict(), checks=checks)
    response.headers.update(error.headers)
    return response, 503
