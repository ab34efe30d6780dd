"""Jobs as the API sees them: submit (store original, enqueue) and status.

The token is a random UUID4 and is also the RQ job id.  The job is enqueued by
dotted path, so the web process never imports the imaging code.  A finished
job's manifest (written by the worker next to its outputs) lets the status
survive the queue's own record of the job: after RQ's result expires, or after
Redis lost its data, SUCCESS is still answered with fresh presigned URLs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry as RedisRetry
from rq import Callback, Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from settings import Settings

from .errors import IdempotencyConflict, NotFound, ResizerError, ServiceUnavailable, WorkerLost
from .options import JobSpec
from .storage import Storage, manifest_key, original_key

log = logging.getLogger(__name__)

TASK = "resizer.tasks.resize_job"
ON_FAILURE = "resizer.tasks.on_failure"  # RQ calls it for any failure, incl. a worker that died
DEFAULT_TENANT = "public"
IDEMPOTENCY_PREFIX = "resizer:idem:"
# The worker's final record of a job (the manifest plus its owner), read by the
# status endpoint before RQ's own record: one GET instead of two, and never
# behind RQ's bookkeeping.  DONE is a list that long-polling requests wait on.
RESULT_PREFIX = "resizer:result:"
DONE_PREFIX = "resizer:done:"
MAX_WAIT = 20  # seconds a status request may wait for the job to end
# The error of a failed job that recorded none: its worker died on every attempt.
WORKER_LOST = WorkerLost().to_dict()

_STATUS = {
    JobStatus.QUEUED: "PENDING",
    JobStatus.DEFERRED: "PENDING",
    JobStatus.SCHEDULED: "PENDING",  # waiting for a retry
    JobStatus.STARTED: "IN_PROGRESS",
    JobStatus.FINISHED: "SUCCESS",
    JobStatus.FAILED: "FAILURE",
    JobStatus.STOPPED: "FAILURE",
    JobStatus.CANCELED: "FAILURE",
}


def make_redis(settings: Settings, *, socket_timeout: float | None = 5.0) -> redis.Redis:
    """A Redis client that fails fast when Redis is down instead of hanging a request."""
    # redis-py's default retries with up to seconds of backoff; a request should
    # rather fail in well under a second and let the client retry on 503.
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=1,
        socket_timeout=socket_timeout,
        health_check_interval=15,
        retry=RedisRetry(ExponentialBackoff(cap=0.2, base=0.02), 2),
    )


def retry_policy(settings: Settings) -> Retry | None:
    """Transient failures are retried with a growing pause: 2 s, 10 s, 30 s, ..."""
    if settings.job_retries == 0:
        return None
    intervals = [2, 10, 30, 60, 120][: settings.job_retries]
    return Retry(max=settings.job_retries, interval=intervals)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def isoformat(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # RQ stores naive UTC datetimes
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def publish_result(connection: redis.Redis, token: str, tenant: str, record: dict[str, Any], ttl: int) -> None:
    """Record a finished job's outcome and wake whoever waits for it."""
    with connection.pipeline() as pipe:
        pipe.set(RESULT_PREFIX + token, json.dumps({**record, "tenant": tenant}), ex=ttl)
        pipe.rpush(DONE_PREFIX + token, 1)
        pipe.expire(DONE_PREFIX + token, 60)
        pipe.execute()


@dataclass
class Submission:
    token: str
    created: bool  # False when an Idempotency-Key replayed an earlier submission


class Jobs:
    def __init__(self, settings: Settings, connection: redis.Redis, storage: Storage, max_waiters: int = 4):
        self.settings = settings
        self.waiters = threading.BoundedSemaphore(max(1, max_waiters))
        self.redis = connection
        self.storage = storage
        self.queue = Queue(settings.queue_name, connection=connection)
        # Blocking waits need a socket timeout longer than the wait itself.
        self.waiter = make_redis(settings, socket_timeout=MAX_WAIT + 5)

    # -- submit ---------------------------------------------------------------
    def submit(
        self,
        image: bytes,
        content_type: str,
        spec: JobSpec,
        *,
        tenant: str = DEFAULT_TENANT,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> Submission:
        token = str(uuid.uuid4())
        idem = None
        if idempotency_key is not None:
            fingerprint = _fingerprint(image, spec)
            idem = IDEMPOTENCY_PREFIX + hashlib.sha256(f"{tenant}\0{idempotency_key}".encode()).hexdigest()
            earlier = self._claim(idem, f"{token} {fingerprint}")
            if earlier is not None:
                earlier_token, earlier_fingerprint = earlier.split(" ", 1)
                if earlier_fingerprint != fingerprint:
                    raise IdempotencyConflict()
                return Submission(earlier_token, created=False)
        try:
            self.storage.put(original_key(token), image, content_type)
            self._enqueue(token, tenant, spec, request_id)
        except BaseException:
            if idem is not None:
                self._release(idem)
            raise
        return Submission(token, created=True)

    def _enqueue(self, token: str, tenant: str, spec: JobSpec, request_id: str | None) -> None:
        s = self.settings
        try:
            self.queue.enqueue(
                TASK,
                token,
                tenant,
                spec.to_dict(),
                request_id,
                job_id=token,
                job_timeout=s.job_timeout,
                result_ttl=s.result_ttl,
                failure_ttl=s.result_ttl,
                ttl=None,
                retry=retry_policy(s),
                on_failure=Callback(ON_FAILURE),
                meta={"tenant": tenant, "request_id": request_id},
                description=f"resize {token} ({len(spec.outputs)} output{'s' if len(spec.outputs) > 1 else ''})",
            )
        except redis.exceptions.RedisError:
            # Do not leave an original behind that no job will ever pick up.
            try:
                self.storage.delete(original_key(token))
            except ResizerError:
                pass  # the lifecycle rule on originals/ collects it
            raise

    def _claim(self, key: str, value: str) -> str | None:
        """Record ``value`` under ``key`` unless something is there; return what was there."""
        if self.redis.set(key, value, nx=True, ex=self.settings.idempotency_ttl):
            return None
        earlier = self.redis.get(key)
        if earlier is None:  # expired between the two calls
            return self._claim(key, value)
        return earlier.decode()

    def _release(self, key: str) -> None:
        try:
            self.redis.delete(key)
        except redis.exceptions.RedisError:
            pass

    # -- status ---------------------------------------------------------------
    def status(self, token: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        try:
            uuid.UUID(token)
        except ValueError:
            raise NotFound("No job with this token.") from None
        raw = self.redis.get(RESULT_PREFIX + token)
        if raw is not None:
            record = json.loads(raw)
            if record.pop("tenant", DEFAULT_TENANT) == tenant:
                return self._render(token, record)
        job = self._fetch(token)
        if job is None or job.meta.get("tenant", DEFAULT_TENANT) != tenant:
            manifest = self._manifest(tenant, token)
            if manifest is None:
                raise NotFound("No job with this token (or its results have expired).")
            return self._render(token, manifest)
        status = _STATUS.get(job.get_status(refresh=False), "PENDING")
        body: dict[str, Any] = {"status": status}
        if status == "SUCCESS":
            manifest = job.return_value(refresh=True) or self._manifest(tenant, token)
            if manifest is None:
                raise ServiceUnavailable("The job's results are not readable right now.")
            return self._render(token, manifest)
        if status == "FAILURE":
            body["error"] = job.meta.get("error") or WORKER_LOST
            body["finished_at"] = isoformat(job.ended_at)
        body["created_at"] = isoformat(job.created_at)
        return self._render(token, body)

    def wait(self, token: str, seconds: float) -> None:
        """Block until the worker announces the job's end, or ``seconds`` pass.

        A waiting request holds one of the process's threads, so only so many
        wait at once; past that the request answers at once (with Retry-After,
        and the client polls again), which keeps threads free for uploads.
        """
        if not self.waiters.acquire(blocking=False):
            return
        try:
            key = DONE_PREFIX + token
            if self.waiter.blpop([key], timeout=seconds) is not None:
                self.waiter.lpush(key, 1)  # leave it for anyone else waiting on the same job
                self.waiter.expire(key, 60)
        finally:
            self.waiters.release()

    def _fetch(self, token: str) -> Job | None:
        try:
            return Job.fetch(token, connection=self.redis)
        except NoSuchJobError:
            return None

    def _manifest(self, tenant: str, token: str) -> dict[str, Any] | None:
        raw = self.storage.get(manifest_key(tenant, token))
        return json.loads(raw) if raw is not None else None

    def _render(self, token: str, record: dict[str, Any]) -> dict[str, Any]:
        """The status body of the contract, with fresh presigned URLs for finished outputs."""
        body: dict[str, Any] = {
            "success": True,
            "token": token,
            "status": record["status"],
            "resized_image_url": None,
        }
        if record["status"] == "SUCCESS":
            ttl = self.settings.presigned_url_ttl
            variants = {}
            for name, out in record["variants"].items():
                variants[name] = {
                    "url": self.storage.presigned_url(out["key"], ttl),
                    "width": out["width"],
                    "height": out["height"],
                    "format": out["format"],
                    "bytes": out["bytes"],
                }
            body["resized_image_url"] = next(iter(variants.values()))["url"]
            body["expires_at"] = isoformat(utcnow() + timedelta(seconds=ttl))
            body["variants"] = variants
        if record.get("error"):
            body["error"] = record["error"]
        for field in ("created_at", "finished_at"):
            if record.get(field):
                body[field] = record[field]
        return body


def _fingerprint(image: bytes, spec: JobSpec) -> str:
    digest = hashlib.sha256(image)
    digest.update(json.dumps(spec.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()
