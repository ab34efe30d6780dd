"""Where an upload waits for its job, with what it takes to run the job again.

Small uploads ride in Redis when Redis keeps what it acknowledges (see
``durability``): ``resizer:original:<token>``, written in the same transaction
as the job, within a budget of bytes in flight (``REDIS_ORIGINALS_BUDGET``) so
a backlog cannot exhaust Redis; past the budget, or on a Redis that could lose
an acknowledged write, uploads go to storage.  Either way a 202 means the job
and its image are durable together.

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

import io
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from .connections import Joined, sends_joined
from .storage import Storage, original_key

PREFIX = "originals/"
REDIS_PREFIX = "resizer:original:"
REDIS_BYTES = "resizer:originals:bytes"  # bytes of originals in Redis now (the budget's meter)
REDIS_TTL = 7 * 86_400  # a key outlives any job that could still need it; the meter is corrected by reconcile
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


def _head(content_type: str, tenant: str, spec: dict[str, Any], request_id: str | None) -> bytes:
    header = json.dumps({"tenant": tenant, "spec": spec, "request_id": request_id, "content_type": content_type},
                        separators=(",", ":")).encode()
    if len(MAGIC) + len(header) + 1 > MAX_HEADER:
        raise ValueError(f"job arguments too large for the original's envelope ({len(header)} bytes)")
    return MAGIC + header + b"\n"


def envelope(data: bytes, content_type: str, tenant: str, spec: dict[str, Any], request_id: str | None) -> Joined:
    """The original as it waits in Redis: the job's header, then the image, never joined in the API's memory."""
    return Joined(_head(content_type, tenant, spec, request_id), data)


def stash(storage: Storage, token: str, data: bytes, content_type: str, tenant: str, spec: dict[str, Any],
          request_id: str | None) -> None:
    # Streamed: the envelope is never a second copy of a (possibly 40 MB) upload in the API's memory.
    storage.put(original_key(token), _Chain(_head(content_type, tenant, spec, request_id), data),
                "application/octet-stream")


class _Chain(io.RawIOBase):
    """Two byte strings read as one seekable file, without joining them."""

    def __init__(self, first: bytes, second: bytes):
        self._parts = (memoryview(first), memoryview(second))
        self._size = len(first) + len(second)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def readinto(self, buffer) -> int:
        first, second = self._parts
        out, done = memoryview(buffer).cast("B"), 0
        while done < len(out) and self._pos < self._size:
            part, at = (first, self._pos) if self._pos < len(first) else (second, self._pos - len(first))
            n = min(len(out) - done, len(part) - at)
            out[done:done + n] = part[at:at + n]
            done += n
            self._pos += n
        return done

    def __len__(self) -> int:
        return self._size


def queue_reserve(pipe: redis.client.Pipeline, size: int) -> None:
    """Take ``size`` bytes of the Redis budget, on a caller's pipeline (so it shares a round trip with the
    fingerprint's claim); its reply goes to reserved()."""
    pipe.incrby(REDIS_BYTES, size)


def reserved(connection: redis.Redis, metered: int, size: int, budget: int) -> bool:
    """Whether the bytes are taken, from the meter after taking them: over the budget they are given back."""
    if metered <= budget:
        return True
    connection.decrby(REDIS_BYTES, size)
    return False


def stash_in_redis(pipe, token: str, packed: Joined | bytes) -> None:
    """Queue the original's write on ``pipe`` (the transaction that also queues the job).

    One SET of the envelope, its header and image sent one after the other as one value (``Joined``): building
    the value in Redis with SET + APPEND instead would over-allocate it (APPEND doubles below 1 MB, adds 1 MB
    above), so Redis would hold up to twice what the budget counts.
    """
    if isinstance(packed, Joined) and not sends_joined(pipe):
        packed = bytes(packed)  # a client made elsewhere (tests, tools): its packer knows only whole values
    pipe.set(REDIS_PREFIX + token, packed, ex=REDIS_TTL)


def unreserve(connection: redis.Redis, size: int) -> None:
    connection.decrby(REDIS_BYTES, size)


UNREAD = object()  # fetch(): Redis was not read for the original yet


def in_redis(meta: dict | None) -> bool:
    """Does the job whose RQ meta this is carry its original in Redis (``queueing.enqueue_resize``'s ``original``)?"""
    return (meta or {}).get("original") == "redis"


def queue_read(pipe, token: str) -> None:
    """Queue the read of a Redis-carried original on ``pipe`` (the worker's start of the job): its reply is what
    ``fetch`` takes as ``read``."""
    pipe.get(REDIS_PREFIX + token)


def fetch(storage: Storage, token: str, connection: redis.Redis | None = None,
          read: bytes | None | object = UNREAD) -> tuple[bytes, str] | None:
    """The image bytes of the original and where they were ("redis" or "storage"); None if neither has it.

    With ``connection`` (the job said its original rides in Redis) Redis is asked first, unless ``read`` is
    what it answered already (``queue_read``; None: it had none).
    """
    raw, where = None, "storage"
    if connection is not None:
        raw, where = (connection.get(REDIS_PREFIX + token) if read is UNREAD else read), "redis"
    if raw is None:
        raw, where = storage.get(original_key(token)), "storage"
    if raw is None:
        return None
    if not raw.startswith(MAGIC):
        return raw, where  # stored by an older version: the bytes alone
    end = raw.index(b"\n", len(MAGIC))
    return raw[end + 1:], where


# The key and the budget's meter move together, atomically, in one round trip (also inside a pipeline).
_RELEASE = """
local size = redis.call('STRLEN', KEYS[1])
if size > 0 then
  redis.call('DEL', KEYS[1])
  redis.call('DECRBY', KEYS[2], size)
end
return size
"""


def release_from_redis(connection, token: str):
    """Delete the original from Redis, giving its bytes back to the budget: the bytes released (0: it was not
    there). On a pipeline, the release is queued and that number is its reply."""
    return connection.eval(_RELEASE, 2, REDIS_PREFIX + token, REDIS_BYTES)


def correct_meter(connection: redis.Redis) -> int | None:
    """Set the budget's meter to what the keys really hold (drift: keys that expired unreleased).

    Skipped (None) if the meter moved while the keys were counted: the next pass tries again.
    """
    with connection.pipeline() as pipe:
        try:
            pipe.watch(REDIS_BYTES)
            total = sum(pipe.strlen(key) for key in pipe.scan_iter(REDIS_PREFIX + "*", count=500))
            pipe.multi()
            pipe.set(REDIS_BYTES, total)
            pipe.execute()
        except redis.exceptions.WatchError:
            return None
    return total


def waiting(storage: Storage, token: str) -> Waiting | None:
    """The job an original in storage waits for (None: no original, or not an envelope of ours)."""
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
