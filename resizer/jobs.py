"""Jobs as the API sees them: submit (store the original, enqueue) and status.

The token is a random UUID4 and is also the RQ job id.  A 202 means the job
will end: the original and the job's arguments are in storage before the job
is queued (see ``originals``), or, on a Redis that keeps what it acknowledges
(see ``durability``), small originals ride in Redis in the job's transaction.

Status reads, in order: the published result, RQ's job, the durable record in
storage, and finally the original itself (a job Redis lost and the reconciler
has not queued again yet is PENDING, not 404).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import blake3
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import resolve_serializer
from rq.utils import str_to_date

from settings import DEFAULT_TENANT, Settings

from . import durability, originals, records, reuse
from .clock import isoformat
from .connections import Joined, claim, compare_and_set, make_redis
from .errors import IdempotencyConflict, NotFound, ResizerError, ServiceUnavailable
from .options import JobSpec
from .queueing import enqueue_resize

from .storage import Storage, original_key

log = logging.getLogger(__name__)

IDEMPOTENCY_PREFIX = "resizer:idem:"
FINGERPRINT_B3 = "b3:"  # an Idempotency-Key's request fingerprint in BLAKE3 (read, not yet written: _fingerprint)
MAX_WAIT = 20  # seconds a status request may wait for the job to end
WAITAOF_TIMEOUT_MS = 1000
REUSE_WAIT = 5.0  # seconds an identical submit waits for the first one's job to be queued


@dataclass
class _Recorder:
    settings: Settings
    storage: Storage
    reaper: None = None  # the API never holds originals to delete

    def join_ending(self, commands, after) -> bool:
        return False  # reused work is ended here, outside any RQ job: it publishes in a round trip of its own


@dataclass
class Submission:
    token: str
    created: bool  # False when an Idempotency-Key replayed an earlier submission
    queued: bool = True  # False when it did not queue a job: a replay, or identical work reused (ended at once)


class Jobs:
    def __init__(self, settings: Settings, connection: redis.Redis, storage: Storage, max_waiters: int = 4,
                 waiter: redis.Redis | None = None):
        self.settings = settings
        self.waiters = threading.BoundedSemaphore(max(1, max_waiters))
        self.redis = connection
        self.storage = storage
        self.queue = Queue(settings.queue_name, connection=connection)
        self._serializer = resolve_serializer(None)  # RQ's default: how it stores a job's meta
        self._recorder = _Recorder(settings, storage)  # what endings.end needs to end reused work here
        # Blocking waits need a socket timeout longer than the wait itself.
        self.waiter = waiter or make_redis(settings, socket_timeout=MAX_WAIT + 5)
        self._durability: tuple[float, durability.Durability] = (-1e9, durability.NOT_DURABLE)

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
        watermarks: dict[str, str] | None = None,
    ) -> Submission:
        """Store and queue the job; ``watermarks``: the version of each mark it draws (for reuse)."""
        token = str(uuid.uuid4())
        idem = None
        digest = reuse.image_digest(image)  # for reuse (and a BLAKE3 Idempotency-Key fingerprint, should one come)
        if idempotency_key is not None:
            fingerprint = _fingerprint(image, spec)
            idem = IDEMPOTENCY_PREFIX + hashlib.sha256(f"{tenant}\0{idempotency_key}".encode()).hexdigest()
            earlier = claim(self.redis, idem, f"{token} {fingerprint}", self.settings.idempotency_ttl)
            if earlier is not None:
                earlier_token, earlier_fingerprint = earlier.split(" ", 1)
                if not _same_request(earlier_fingerprint, fingerprint, digest, spec):
                    raise IdempotencyConflict()
                if self._known(earlier_token, tenant) or not compare_and_set(
                        self.redis, idem, earlier, f"{token} {fingerprint}", self.settings.idempotency_ttl):
                    return Submission(earlier_token, created=False, queued=False)
                # The submit that claimed the key never got its job stored (its process died, or storage
                # failed and the claim was not given back): a 202 for that token would be a job that never ends.
        spec_dict = spec.to_dict()
        durable = self.durability()
        print_ = reuse.fingerprint(tenant, {**spec_dict, "watermarks": watermarks or {}}, digest)
        # The image may wait in Redis (with its job, in one transaction) if Redis keeps what it acknowledges.
        packed = (originals.envelope(image, content_type, tenant, spec_dict, request_id)
                  if durable.keeps_acknowledged and len(image) <= self.settings.redis_original_max_bytes else None)
        reserved = 0  # bytes of the Redis budget taken and not yet handed to the transaction
        try:
            follows = None
            earlier, in_redis = self._claim(print_, token, packed)
            reserved, packed = (len(packed), packed) if in_redis else (0, None)
            if earlier is not None:
                state, record = self._earlier(earlier, tenant)
                if state == "succeeded":
                    self._end_reused(token, tenant, spec, record)
                    return Submission(token, created=True, queued=False)
                if state == "running":
                    follows = earlier
                else:
                    holder = reuse.take_over(self.redis, print_, earlier, token, reuse.ttl(self.settings))
                    if holder != token and self._earlier(holder, tenant)[0] == "running":
                        follows = holder  # an identical submit took it over first
            if follows is not None:
                self._enqueue_after_storing(token, image, content_type, tenant, spec_dict, request_id, follows)
                reuse.release_follower(self.queue, token)  # the first may have ended while this one was stored
            elif in_redis:
                reserved = 0  # the transaction gives the bytes back itself if it fails
                self._enqueue_with_original(token, tenant, spec_dict, request_id, packed)
            else:
                self._enqueue_after_storing(token, image, content_type, tenant, spec_dict, request_id)
            if durable.waitaof:
                self._wait_for_disk(durable)
        except BaseException:
            if idem is not None:
                self._release(idem)
            reuse.release(self.redis, print_, token)
            raise
        finally:
            if reserved:  # a failure before the transaction: the bytes go back
                self._unreserve(reserved)
        return Submission(token, created=True)

    def _claim(self, print_: str, token: str, packed: Joined | None) -> tuple[str | None, bool]:
        """Claim the fingerprint and, for an original that may ride in Redis, its bytes of the budget, in one
        round trip (under load each write waits for Redis's fsync: 6 ms at p50, 21 at p99, measured).

        Returns the token holding the fingerprint already (None: the claim is ours) and whether the bytes are
        reserved (then the caller gives them back unless its transaction takes them). With identical work
        found, they are given back here: that upload waits in storage if it waits at all.
        """
        ttl = reuse.ttl(self.settings)
        with self.redis.pipeline(transaction=False) as pipe:
            reuse.queue_claim(pipe, print_, token, ttl)
            if packed is not None:
                originals.queue_reserve(pipe, len(packed))
            replies = pipe.execute()
        in_redis = packed is not None and originals.reserved(
            self.redis, replies[2], len(packed), self.settings.redis_originals_budget)
        try:
            earlier = reuse.claimed(self.redis, replies[:2], print_, token, ttl)
        except BaseException:
            if in_redis:
                self._unreserve(len(packed))
            raise
        if in_redis and earlier is not None:
            self._unreserve(len(packed))
            in_redis = False
        return earlier, in_redis

    def durability(self) -> durability.Durability:
        """What Redis keeps (probed at most once a minute: a restart may change it)."""
        checked, known = self._durability
        if time.monotonic() - checked > 60:
            known = durability.probe(self.redis)
            if known != self._durability[1]:
                log.info("%s", known.describe())
            self._durability = (time.monotonic(), known)
        return known

    def _enqueue_with_original(self, token: str, tenant: str, spec: dict, request_id: str | None,
                               packed: Joined) -> None:
        """Image and job in one transaction: both or neither, in one round trip."""
        try:
            with self.redis.pipeline() as pipe:
                pipe.multi()  # before RQ's commands: it opens the transaction only when none is open
                originals.stash_in_redis(pipe, token, packed)
                enqueue_resize(self.queue, self.settings, token, tenant, spec, request_id, pipeline=pipe,
                               original="redis")
                pipe.execute()
        except BaseException:
            self._unreserve(len(packed))
            raise

    def _unreserve(self, size: int) -> None:
        try:
            originals.unreserve(self.redis, size)
        except redis.exceptions.RedisError:
            pass  # the reconciler corrects the meter

    def _enqueue_after_storing(self, token: str, image: bytes, content_type: str, tenant: str, spec: dict,
                               request_id: str | None, follows: str | None = None) -> None:
        originals.stash(self.storage, token, image, content_type, tenant, spec, request_id)
        try:
            enqueue_resize(self.queue, self.settings, token, tenant, spec, request_id, follows=follows)
        except redis.exceptions.RedisError:
            # Do not leave an original behind that no job will ever pick up.
            try:
                self.storage.delete(original_key(token))
            except ResizerError:
                pass  # the reconciler would queue it: harmless work nobody asked for; the lifecycle rule ends it
            raise

    def _earlier(self, earlier: str, tenant: str) -> tuple[str, dict[str, Any] | None]:
        return reuse.state_of(self.redis, self.storage, earlier, tenant, REUSE_WAIT)

    def _end_reused(self, token: str, tenant: str, spec: JobSpec, earlier: dict[str, Any]) -> None:
        reuse.end_reused(self._recorder, self.redis, token, tenant, spec.callback_url, earlier)

    def _wait_for_disk(self, durable: durability.Durability) -> None:
        """WAITAOF: answer 202 only once the job is fsynced (and on a replica's disk when there is one)."""
        try:
            local, replicas = self.redis.execute_command("WAITAOF", 1, durable.replicas, WAITAOF_TIMEOUT_MS)
        except redis.exceptions.ResponseError as exc:  # AOF turned off since the probe
            log.warning("WAITAOF refused (%s); probing Redis again", exc)
            self._durability = (-1e9, durability.NOT_DURABLE)
            raise ServiceUnavailable("The job queue could not confirm the job is stored; retry shortly.") from None
        if local < 1 or replicas < durable.replicas:
            raise ServiceUnavailable("The job queue did not confirm the job is on disk in time; retry shortly.")

    def _known(self, token: str, tenant: str) -> bool:
        """Does the job exist anywhere: in Redis (queued, running, ended) or in storage (waiting, ended)?"""
        if self.redis.exists(Job.key_for(token), records.RESULT_PREFIX + token):
            return True
        waiting = originals.waiting(self.storage, token)
        return (waiting is not None and waiting.tenant == tenant) or \
            records.read_durable(self.storage, tenant, token, rebuild=False) is not None

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
        # One round trip: the published result and the few fields of RQ's job that status needs
        # (not Job.fetch, which loads and decompresses the whole job on every poll).
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(records.RESULT_PREFIX + token)
            pipe.hmget(Job.key_for(token), "status", "meta", "created_at", "ended_at")
            raw, (state, meta, created, ended) = pipe.execute()
        record = records.parse_result(raw, tenant)
        if record is not None:
            return self._render(token, record)
        if state is None:
            return self._without_job(token, tenant)
        meta = self._serializer.loads(meta) if meta else None
        if not meta or meta.get("tenant", DEFAULT_TENANT) != tenant:
            # another owner's job, or a partial hash (RQ writing to a job Redis had lost): ask storage
            return self._without_job(token, tenant)
        try:
            status = records.STATUS.get(JobStatus(state.decode()), "PENDING")
        except ValueError:
            status = "PENDING"
        body: dict[str, Any] = {"status": status}
        if status == "SUCCESS":  # the published result expired before RQ's record of the job
            record = records.read_durable(self.storage, tenant, token)
            if record is None:
                raise ServiceUnavailable("The job's results are not readable right now.")
            return self._render(token, record)
        if status == "FAILURE":
            # No result published: the durable record knows better. A success whose ending failed on its last
            # attempt is "failed" to RQ, and an error noted on RQ's job may be an earlier attempt's.
            try:
                record = records.read_durable(self.storage, tenant, token, rebuild=False)
            except ResizerError:
                if not meta.get("error"):
                    raise
                record = None  # storage is out: what RQ's job says is the best answer there is
            if record is not None:
                return self._render(token, record)
            body["error"] = meta.get("error") or records.WORKER_LOST
            body["finished_at"] = isoformat(str_to_date(ended.decode())) if ended else None
        body["created_at"] = isoformat(str_to_date(created.decode())) if created else None
        return self._render(token, body)

    def _without_job(self, token: str, tenant: str) -> dict[str, Any]:
        """Redis knows nothing of the job: its durable record, or its original waiting to be queued again."""
        record = records.read_durable(self.storage, tenant, token)
        if record is not None:
            return self._render(token, record)
        waiting = originals.waiting(self.storage, token)
        if waiting is not None and waiting.tenant == tenant:
            return self._render(token, {"status": "PENDING"})
        raise NotFound("No job with this token (or its results have expired).")

    def wait(self, token: str, seconds: float) -> bytes | None:
        """Block until the worker announces the job's end, or ``seconds`` pass; the announcement (the published
        result), or None.

        A waiting request holds one of the process's threads, so only so many
        wait at once; past that the request answers at once (with Retry-After,
        and the client polls again), which keeps threads free for uploads.
        """
        if not self.waiters.acquire(blocking=False):
            return None
        try:
            key = records.DONE_PREFIX + token
            # From the list to itself: it wakes on the end's push and leaves the list as it was for anyone else
            # waiting on the same job (with BLPOP a LPUSH and an EXPIRE had to put it back: two more writes,
            # each waiting for Redis's fsync).
            return self.waiter.blmove(key, key, seconds, "RIGHT", "LEFT")
        finally:
            self.waiters.release()

    def status_after_wait(self, token: str, tenant: str, seconds: float) -> dict[str, Any]:
        """The status once the job ends or ``seconds`` pass. Woken by the end, the answer is the result it
        announced (the record ``status`` would read: one round trip less per long poll); else read again."""
        record = records.parse_result(self.wait(token, seconds), tenant)
        return self._render(token, record) if record is not None else self.status(token, tenant)

    def _render(self, token: str, record: dict[str, Any]) -> dict[str, Any]:
        return records.render(token, record, self.storage.presigned_url, self.settings.presigned_url_ttl)


def _fingerprint(image: bytes, spec: JobSpec) -> str:
    """What an Idempotency-Key's claim holds beside its token: the request it was first used with. Still SHA-256
    over the bytes, the form every release reads: during a rolling upgrade (or after a rollback) a retry may reach
    a process of the release before, which compares it as it is. BLAKE3 ones (``FINGERPRINT_B3``) are read too,
    so a later release may write them once no release before this one runs."""
    digest = hashlib.sha256(image)
    digest.update(_spec_json(spec))
    return digest.hexdigest()


def _same_request(earlier: str, fingerprint: str, digest: bytes, spec: JobSpec) -> bool:
    """Is ``earlier`` (a claim's fingerprint) that of this request, ``fingerprint``? Either form (above)."""
    if earlier.startswith(FINGERPRINT_B3):
        return earlier == FINGERPRINT_B3 + blake3.blake3(digest + _spec_json(spec)).hexdigest()
    return earlier == fingerprint


def _spec_json(spec: JobSpec) -> bytes:
    return json.dumps(spec.to_dict(), sort_keys=True).encode()
