"""The application factory: settings -> clients -> blueprints -> error handlers."""

from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass

import redis
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from settings import Settings

from . import errors
from .connections import make_redis
from .jobs import Jobs
from .logs import request_id
from .metrics import register_metrics
from .security import register_security
from .storage import Storage

log = logging.getLogger("resizer.api")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass
class Service:
    """What the routes need, built once per process and passed explicitly."""

    settings: Settings
    redis: redis.Redis
    storage: Storage
    jobs: Jobs


def create_app(settings: Settings | None = None, *, redis_client: redis.Redis | None = None,
               storage: Storage | None = None, waiter: redis.Redis | None = None) -> Flask:
    """``waiter``: the Redis client that long polls block on (default: a new one with a long timeout)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.json.sort_keys = False
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies)
    register_service(app, settings, redis_client, storage, waiter)
    register_request_hooks(app)
    register_security(app, settings)
    register_metrics(app, settings, app.extensions["resizer"].redis)
    register_blueprints(app)
    register_error_handlers(app)
    return app


def register_service(app: Flask, settings: Settings, redis_client, storage, waiter=None) -> None:
    redis_client = redis_client or make_redis(settings, socket_timeout=3.0)
    # The API must answer fast when storage is down: one short attempt, then 503.
    storage = storage or Storage(settings, connect_timeout=1.0, read_timeout=10.0)
    # Long polls may hold all but two of a process's threads (gunicorn's WEB_THREADS):
    # two stay free for uploads whatever the number of waiting clients.
    max_waiters = int(os.environ.get("WEB_THREADS", "8")) - 2
    jobs = Jobs(settings, redis_client, storage, max_waiters=max_waiters, waiter=waiter)
    app.extensions["resizer"] = Service(settings, redis_client, storage, jobs)


def register_blueprints(app: Flask) -> None:
    from .api import bp
    from .docs import bp as docs_bp
    from .watermarks import bp as watermarks_bp

    app.register_blueprint(bp)
    app.register_blueprint(docs_bp)
    app.register_blueprint(watermarks_bp)


def register_request_hooks(app: Flask) -> None:
    @app.before_request
    def _request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request_id.set(g.request_id)

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        return response


def error_response(error: errors.ResizerError) -> tuple[Response, int]:
    response = jsonify(success=False, error=error.to_dict())
    response.headers.update(error.headers)
    return response, error.status


# Werkzeug's own errors, in the contract's shape.
_HTTP_ERRORS = {
    400: errors.InvalidJSON,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
    429: errors.RateLimited,
}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(errors.ResizerError)
    def _resizer_error(exc: errors.ResizerError):
        if isinstance(exc, errors.StorageUnavailable):
            # The worker's retryable code; clients get the contract's one 503 code.
            log.warning("storage unavailable: %s", exc.message)
            return error_response(errors.ServiceUnavailable("Object storage is unreachable; retry shortly."))
        if exc.status >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        cls = _HTTP_ERRORS.get(exc.code or 500)
        if cls is None:
            return error_response(errors.ResizerError(exc.description if (exc.code or 500) < 500 else None))
        if exc.code == 404:
            return error_response(cls(f"No route {request.path}; see /api/v1/openapi.json."))
        if exc.code == 405:
            error = cls(f"{request.method} is not allowed on {request.path}.")
            response, status = error_response(error)
            response.headers["Allow"] = ", ".join(exc.valid_methods or [])
            return response, status
        if exc.code == 413:
            limit = app.config["MAX_CONTENT_LENGTH"]
            return error_response(cls(f"The request body is over the limit of {limit:,} bytes."))
        return error_response(cls())

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    def _redis_down(exc: Exception):
        log.warning("Redis unavailable: %s", exc)
        return error_response(errors.ServiceUnavailable("The job queue (Redis) is unreachable; retry shortly."))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(errors.InternalError())
