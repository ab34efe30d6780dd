"""API keys, tenants, rate limits and CORS: everything that decides who may call what, how often.

Keys are configured as SHA-256 hashes (``API_KEYS="acme:<hex>,beta:<hex>"`` or
one ``tenant hex`` pair per line in ``API_KEYS_FILE``), so a leaked
configuration does not leak keys.  A presented key is hashed and compared with
every configured hash in constant time.  The tenant a key belongs to owns the
jobs it creates: other tenants get 404 for them, and outputs are stored under
the tenant's own prefix.  ``python -m resizer.security new <tenant>`` makes a key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sys

from flask import Flask, g, request
from flask_limiter import Limit, Limiter

from settings import DEFAULT_TENANT, TENANT_PATTERN, Settings

from .errors import Unauthorized

PROTECTED_PREFIX = ("/api/v1/resize", "/api/v1/watermarks")  # what API keys (and rate limits) guard


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def tenant() -> str:
    """The owner of the current request (its API key's tenant)."""
    return g.get("tenant", DEFAULT_TENANT)


def register_security(app: Flask, settings: Settings) -> None:
    digests = list(settings.api_key_hashes().items())

    @app.before_request
    def _authenticate() -> None:
        g.tenant = DEFAULT_TENANT
        if not digests or not request.path.startswith(PROTECTED_PREFIX) or request.method == "OPTIONS":
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Send your API key as 'Authorization: Bearer <key>'.",
                               headers={"WWW-Authenticate": 'Bearer realm="resizer"'})
        presented = hash_key(token.strip())
        tenant = None
        for digest, owner in digests:  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(presented, digest):
                tenant = owner
        if tenant is None:
            raise Unauthorized("This API key is not valid (unknown or revoked).",
                               headers={"WWW-Authenticate": 'Bearer realm="resizer", error="invalid_token"'})
        g.tenant = tenant

    _register_rate_limits(app, settings)
    _register_cors(app, settings)


def _register_rate_limits(app: Flask, settings: Settings) -> None:
    limits = []
    if settings.rate_limit_per_key:
        limits.append(Limit(settings.rate_limit_per_key, key_function=lambda: f"key:{g.get('tenant', 'public')}"))
    if settings.rate_limit_per_ip:
        limits.append(Limit(settings.rate_limit_per_ip, key_function=lambda: f"ip:{request.remote_addr}"))
    if not limits:
        return
    storage = settings.redis_url if settings.redis_url.startswith(("redis://", "rediss://")) else "memory://"
    Limiter(
        key_func=lambda: request.remote_addr or "-",
        app=app,
        default_limits=limits,
        default_limits_exempt_when=lambda: not request.path.startswith(PROTECTED_PREFIX),
        storage_uri=storage,
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 1},
        strategy="moving-window",
        headers_enabled=True,
        retry_after="delta-seconds",
        key_prefix="resizer-ratelimit",
        # Redis down: let requests through to the routes, which answer 503 themselves.
        swallow_errors=True,
    )


def _register_cors(app: Flask, settings: Settings) -> None:
    origins = {o.strip() for o in settings.cors_origins.split(",") if o.strip()}
    if not origins:
        return  # CORS off: browsers on other origins cannot read responses

    @app.after_request
    def _cors(response):
        origin = request.headers.get("Origin")
        if origin and ("*" in origins or origin in origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Idempotency-Key"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Expose-Headers"] = "Location, Retry-After, X-Request-ID"
        return response


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "new" and re.fullmatch(TENANT_PATTERN, args[1]):
        key = secrets.token_urlsafe(32)
        print(f"API key for {args[1]} (give it to the client; it is not stored anywhere):\n  {key}\n"
              f"Add this to API_KEYS (comma-separated) or as a line of API_KEYS_FILE:\n  {args[1]}:{hash_key(key)}")
        return 0
    if len(args) == 2 and args[0] == "hash":
        print(hash_key(args[1]))
        return 0
    print("usage: python -m resizer.security new <tenant>   |   python -m resizer.security hash <key>", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
