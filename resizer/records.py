"""A job's records, shared by the API (status) and the worker (endings, webhooks).

Three places hold what is known of a job, read in this order by the status endpoint:
- the *result* in Redis (``resizer:result:<token>``): the final record, written
  once when the job ends, with the owner; one GET answers a finished job;
- RQ's own job hash while the job is queued or running;
- the *durable record* in storage: the same final record, so the answer outlives
  Redis (flushed, failed over, expired): a success's rides on its outputs as
  metadata (no object of its own), a failure's is ``manifest.json``.

``DONE_PREFIX`` is a list that long-polling requests block on; publishing a
result pushes the result itself to it, so a long poll it wakes answers without
reading the job again.  ``render`` turns any record into the contract's status body
with fresh presigned URLs.
"""

from __future__ import annotations

import base64
import io
import json
import zlib
from datetime import timedelta
from typing import Any, Callable

import redis
from PIL import Image
from rq.job import JobStatus

from settings import DEFAULT_TENANT

from .clock import isoformat, utcnow
from .errors import WorkerLost
from .storage import MANIFEST, Storage, legacy_output_prefix, manifest_key, original_key, output_prefix

RECORD_META = "record"  # x-amz-meta-record on each output of a success
MAX_PACKED = 1800  # S3 allows 2 KB of user metadata in all
RESULT_PREFIX = "resizer:result:"
DONE_PREFIX = "resizer:done:"
# The error of a failed job that recorded none: its worker died on every attempt.
WORKER_LOST = WorkerLost().to_dict()

# RQ's states as the contract names them.
STATUS = {
    JobStatus.QUEUED: "PENDING",
    JobStatus.DEFERRED: "PENDING",
    JobStatus.SCHEDULED: "PENDING",  # waiting for a retry
    JobStatus.STARTED: "IN_PROGRESS",
    JobStatus.FINISHED: "SUCCESS",
    JobStatus.FAILED: "FAILURE",
    JobStatus.STOPPED: "FAILURE",
    JobStatus.CANCELED: "FAILURE",
}


def publish(connection: redis.Redis, token: str, tenant: str, record: dict[str, Any], ttl: int) -> None:
    """Record a finished job's outcome and wake whoever waits for it.

    ``connection`` may be a pipeline (the caller executes it); else one round trip.
    """
    pipe = connection if isinstance(connection, redis.client.Pipeline) else connection.pipeline()
    result = json.dumps({**record, "tenant": tenant})
    pipe.set(RESULT_PREFIX + token, result, ex=ttl)
    # What a woken long poll answers with (parse_result, as the GET): the latest result only, as in RESULT_PREFIX
    # (long polls rotate the list, so an older announcement left in it would come round again).
    pipe.delete(DONE_PREFIX + token)
    pipe.rpush(DONE_PREFIX + token, result)
    pipe.expire(DONE_PREFIX + token, 60)
    if pipe is not connection:
        pipe.execute()


def read_result(connection: redis.Redis, token: str, tenant: str) -> dict[str, Any] | None:
    """The published result of ``tenant``'s job, or None (not finished, expired, or another owner's)."""
    return parse_result(connection.get(RESULT_PREFIX + token), tenant)


def parse_result(raw: bytes | None, tenant: str) -> dict[str, Any] | None:
    """A published result as read from Redis (by ``read_result``, in the caller's pipeline, or announced to a long
    poll), or None if it is not one: ``tenant``'s, a JSON object with a status."""
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:  # not JSON (bytes nobody here wrote): the job's own records answer instead
        return None
    if not isinstance(record, dict) or "status" not in record:  # e.g. "1", announced by the release before
        return None
    return record if record.pop("tenant", DEFAULT_TENANT) == tenant else None


def pack(record: dict[str, Any]) -> str | None:
    """The record as object metadata (on every output of a success), or None if it does not fit."""
    packed = base64.b64encode(zlib.compress(json.dumps(record, separators=(",", ":")).encode(), 6)).decode()
    return packed if len(packed) <= MAX_PACKED else None


def write_durable(storage: Storage, tenant: str, token: str, record: dict[str, Any]) -> None:
    """The record as its own object: failures, and successes whose record did not fit on the outputs."""
    storage.put(manifest_key(tenant, token), json.dumps(record).encode(), "application/json")


def read_durable(storage: Storage, tenant: str, token: str, *, rebuild: bool = True) -> dict[str, Any] | None:
    """The final record kept in storage, or None.

    A success keeps its record on its outputs (metadata ``x-amz-meta-record``): no
    separate object per job.  Some S3 servers (rclone's) keep metadata only in
    memory; when it is gone, ``rebuild`` reads the outputs' headers instead
    (``source`` and ``placeholder`` are then unknown), but only once the
    original is gone (the job ended: its outputs are complete).
    """
    for prefix in (output_prefix(tenant, token), legacy_output_prefix(tenant, token)):
        raw = storage.get(prefix + MANIFEST)
        if raw is not None:
            return json.loads(raw)
        listed = {key: modified for key, modified in storage.list(prefix) if not key.endswith("/" + MANIFEST)}
        if listed:
            break
    else:
        return None
    head = storage.head(next(iter(sorted(listed))))
    packed = head["metadata"].get(RECORD_META) if head is not None else None
    if packed:
        record = json.loads(zlib.decompress(base64.b64decode(packed)))
        complete = all(v["key"] in listed for v in record["variants"].values())
        return record if complete else None
    if not rebuild or storage.get_head_bytes(original_key(token), 1) is not None:
        return None  # the original still waits: the job has not ended, whatever outputs exist
    return _rebuild(storage, prefix, listed)


def _rebuild(storage: Storage, prefix: str, listed: dict[str, Any]) -> dict[str, Any] | None:
    variants = {}
    for key in sorted(listed):
        name, _, ext = key[len(prefix):].rpartition(".")
        data = storage.get(key)
        if data is None:
            return None
        try:
            with Image.open(io.BytesIO(data)) as image:  # the header only
                width, height = image.size
        except (OSError, ValueError):
            return None
        variants[name] = {"key": key, "width": width, "height": height,
                          "format": {"jpg": "jpeg"}.get(ext, ext), "bytes": len(data)}
    return {"status": "SUCCESS", "finished_at": isoformat(max(listed.values())), "variants": variants}


def render(token: str, record: dict[str, Any], presign: Callable[[str, int], str], ttl: int) -> dict[str, Any]:
    """The status body of the contract, with fresh presigned URLs for finished outputs."""
    body: dict[str, Any] = {
        "success": True,
        "token": token,
        "status": record["status"],
        "resized_image_url": None,
    }
    if record["status"] == "SUCCESS":
        variants = {}
        for name, out in record["variants"].items():
            variants[name] = {
                "url": presign(out["key"], ttl),
                "width": out["width"],
                "height": out["height"],
                "format": out["format"],
                "bytes": out["bytes"],
            }
        body["resized_image_url"] = next(iter(variants.values()))["url"]
        body["expires_at"] = isoformat(utcnow() + timedelta(seconds=ttl))
        body["variants"] = variants
        for field in ("source", "placeholder"):
            if record.get(field):
                body[field] = record[field]
        body["reused"] = bool(record.get("reused", False))
    if record.get("error"):
        body["error"] = record["error"]
    for field in ("created_at", "finished_at"):
        if record.get(field):
            body[field] = record[field]
    return body
