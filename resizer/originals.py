"""Where an upload waits for its job, with what it takes to run the job again.

The original is stored under ``originals/<token>`` as a small envelope: one
line of magic, one line of JSON with the job's arguments (owner, options,
request id, content type), then the image bytes.  That makes acceptance durable
beyond Redis: if Redis loses the job (a crash in the last second before its
append-only file reached disk, a failover, a Redis that comes back empty), the
reconciler finds an original with neither a job nor a final record and queues
its job again from the envelope, read with one small ranged GET.  (The
arguments are not kept in S3 object metadata: some S3 servers, rclone's among
them, keep metadata only in memory.)  The worker hands the original to the
reaper once the job has ended.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .storage import Storage, original_key

PREFIX = "originals/"
MAGIC = b"resizer-job/1\n"
MAX_HEADER = 16 * 1024  # options are bounded (variants, fields) far below this


@dataclass(frozen=True)
class Waiting:
    """What the envelope says of the job its original waits for."""

    token: str
    tenant: str
    spec: dict[str, Any]
    request_id: str | None
    content_type: str


def stash(storage: Storage, token: str, data: bytes, content_type: str, tenant: str, spec: dict[str, Any],
          request_id: str | None) -> None:
    header = json.dumps({"tenant": tenant, "spec": spec, "request_id": request_id, "content_type": content_type},
                        separators=(",", ":")).encode()
    if len(MAGIC) + len(header) + 1 > MAX_HEADER:
        raise ValueError(f"job arguments too large for the original's envelope ({len(header)} bytes)")
    storage.put(original_key(token), b"".join((MAGIC, header, b"\n", data)), "application/octet-stream")


def fetch(storage: Storage, token: str) -> bytes | None:
    """The image bytes of the original (None: not in storage)."""
    raw = storage.get(original_key(token))
    if raw is None:
        return None
    if not raw.startswith(MAGIC):
        return raw  # stored by an older version: the bytes alone
    end = raw.index(b"\n", len(MAGIC))
    return raw[end + 1:]


def waiting(storage: Storage, token: str) -> Waiting | None:
    """The job an original waits for (None: no original, or not an envelope of ours)."""
    head = storage.get_head_bytes(original_key(token), MAX_HEADER)
    if head is None or not head.startswith(MAGIC):
        return None
    end = head.find(b"\n", len(MAGIC))
    try:
        meta = json.loads(head[len(MAGIC):end]) if end > 0 else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or "spec" not in meta:
        return None
    return Waiting(token, meta.get("tenant", ""), meta["spec"], meta.get("request_id"),
                   meta.get("content_type", "application/octet-stream"))


def listed(storage: Storage) -> list[tuple[str, datetime]]:
    """(token, stored at) of every original in storage."""
    return [(key[len(PREFIX):], modified) for key, modified in storage.list(PREFIX)]
