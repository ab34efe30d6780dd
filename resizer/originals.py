"""Where an upload waits for its job, with what it takes to run the job again.

The original is stored under ``originals/<token>`` with the job's arguments in
its metadata (owner, options, request id).  That makes acceptance durable
beyond Redis: if Redis loses the job (a crash in the last second before its
append-only file reached disk, a failover, a Redis that comes back empty), the
reconciler finds an original with neither a job nor a final record and queues
its job again from this metadata.  The worker hands the original to the reaper
once the job has ended.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .storage import Storage, original_key

PREFIX = "originals/"
MAX_METADATA = 1800  # S3 allows 2 KB of user metadata in all


@dataclass(frozen=True)
class Waiting:
    """What the original's metadata says of the job it waits for."""

    token: str
    tenant: str
    spec: dict[str, Any]
    request_id: str | None


def stash(storage: Storage, token: str, data: bytes, content_type: str, tenant: str, spec: dict[str, Any],
          request_id: str | None) -> None:
    packed = base64.b64encode(zlib.compress(json.dumps(spec, separators=(",", ":")).encode(), 9)).decode()
    if len(packed) > MAX_METADATA:  # options are bounded well below this; never store a record that cannot be read
        raise ValueError(f"job options too large for the original's metadata ({len(packed)} bytes)")
    storage.put(original_key(token), data, content_type,
                metadata={"tenant": tenant, "request-id": request_id or "", "spec": packed})


def fetch(storage: Storage, token: str) -> bytes | None:
    return storage.get(original_key(token))


def waiting(storage: Storage, token: str) -> Waiting | None:
    """The job an original waits for (None: no original, or one without our metadata)."""
    head = storage.head(original_key(token))
    if head is None:
        return None
    meta = head["metadata"]
    try:
        spec = json.loads(zlib.decompress(base64.b64decode(meta["spec"])))
    except (KeyError, ValueError, zlib.error):
        return None
    return Waiting(token, meta.get("tenant", ""), spec, meta.get("request-id") or None)


def listed(storage: Storage) -> list[tuple[str, datetime]]:
    """(token, stored at) of every original in storage."""
    return [(key[len(PREFIX):], modified) for key, modified in storage.list(PREFIX)]
