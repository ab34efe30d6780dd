"""Reuse of identical work: the same bytes, options and owner share one job's outputs.

A submit's fingerprint is SHA-256 over the owner (tenant), the options as
canonical JSON and the image bytes; different bytes, options or owners never
match.  The first submit claims the fingerprint (``SET NX``) for as long as its
outputs are kept.  A later identical submit then:
- ends at once, SUCCESS with the same stored outputs and ``reused: true``, when
  the first job has succeeded (nothing is decoded);
- follows the first job when it is still queued or running: its own job waits
  for the first (an RQ dependency) and copies its outputs, so at most one does
  the work; if the first fails, the follower processes its own upload;
- takes over the claim when the first job failed or its record is gone.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis

from settings import Settings

PREFIX = "resizer:reuse:"


def fingerprint(tenant: str, spec: dict[str, Any], image: bytes) -> str:
    digest = hashlib.sha256(tenant.encode() + b"\0")
    digest.update(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode() + b"\0")
    digest.update(image)
    return digest.hexdigest()


def ttl(settings: Settings) -> int:
    """How long a claim may be reused: while the outputs are surely kept (a day less than their retention)."""
    return max(60, settings.result_retention_days * 86_400 - 86_400)


def claim(connection: redis.Redis, print_: str, token: str, seconds: int) -> str | None:
    """Claim the fingerprint for ``token``; the token that holds it already, if any."""
    if connection.set(PREFIX + print_, token, nx=True, ex=seconds):
        return None
    earlier = connection.get(PREFIX + print_)
    return earlier.decode() if earlier is not None else claim(connection, print_, token, seconds)


def take_over(connection: redis.Redis, print_: str, token: str, seconds: int) -> None:
    connection.set(PREFIX + print_, token, ex=seconds)


def reused(record: dict[str, Any], created_at: str | None, finished_at: str | None) -> dict[str, Any]:
    """A copy of a successful record for another token: same outputs, its own times, ``reused``."""
    return {**record, "created_at": created_at, "finished_at": finished_at, "reused": True}
