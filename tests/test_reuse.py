"""Reuse of identical work, the parts a live run rarely shows: a follower whose first job ended
before it was queued, the claim taken over by two submits at once."""

from __future__ import annotations

from rq import Queue
from rq.job import JobStatus

from resizer import reuse
from resizer.queueing import enqueue_resize
from resizer.reconcile import reconcile
from settings import Settings

from fakes import FakeStorage

SPEC = {"outputs": [{"name": "default", "width": 10, "height": None, "fit": "contain", "gravity": "center",
                     "enlarge": False, "format": "jpeg", "quality": None, "background": [255, 255, 255],
                     "watermark": None}], "callback_url": None}
FIRST, FOLLOWER = "00000000-0000-4000-8000-0000000000a1", "00000000-0000-4000-8000-0000000000b2"


def settings(url):
    return Settings.from_env({"APP_ENV": "testing", "REDIS_URL": url})


def first_and_follower(real_redis, redis_server, first_status: str) -> tuple[Settings, Queue]:
    """FIRST queued and moved to ``first_status``, then FOLLOWER queued to follow it."""
    s = settings(redis_server)
    queue = Queue(s.queue_name, connection=real_redis)
    enqueue_resize(queue, s, FIRST, "acme", SPEC, None)
    real_redis.hset(f"rq:job:{FIRST}", "status", first_status)
    enqueue_resize(queue, s, FOLLOWER, "acme", SPEC, None, follows=FIRST)
    return s, queue


def test_a_follower_of_a_job_that_failed_meanwhile_is_queued_not_stuck(real_redis, redis_server):
    # the first job failed while the follower was being stored
    _, queue = first_and_follower(real_redis, redis_server, JobStatus.FAILED)
    follower = queue.fetch_job(FOLLOWER)
    assert follower.get_status() == JobStatus.DEFERRED  # RQ defers it and would never queue it
    assert reuse.release_follower(queue, FOLLOWER)
    assert queue.fetch_job(FOLLOWER).get_status() == JobStatus.QUEUED and FOLLOWER in queue.job_ids


def test_a_follower_of_a_running_job_waits(real_redis, redis_server):
    _, queue = first_and_follower(real_redis, redis_server, JobStatus.STARTED)
    assert not reuse.release_follower(queue, FOLLOWER)
    assert queue.fetch_job(FOLLOWER).get_status() == JobStatus.DEFERRED


def test_the_reconciler_frees_followers_whose_first_job_is_gone(real_redis, redis_server):
    s, queue = first_and_follower(real_redis, redis_server, JobStatus.STARTED)
    real_redis.delete(f"rq:job:{FIRST}")  # lost (expired, or Redis lost part of its data)
    reconcile(real_redis, FakeStorage(), s, force=True)
    assert queue.fetch_job(FOLLOWER).get_status() == JobStatus.QUEUED


def finished_with_its_follower_deferred(real_redis, redis_server) -> Queue:
    """FIRST ended while FOLLOWER is still deferred: what a release reading between the two sees."""
    _, queue = first_and_follower(real_redis, redis_server, JobStatus.STARTED)
    real_redis.hset(f"rq:job:{FIRST}", "status", JobStatus.FINISHED)
    assert real_redis.smembers(f"rq:job:{FIRST}:dependents") == {FOLLOWER.encode()}
    return queue


def test_a_follower_released_before_its_jobs_ending_queues_it_is_queued_once(real_redis, redis_server):
    queue = finished_with_its_follower_deferred(real_redis, redis_server)
    assert reuse.release_follower(queue, FOLLOWER)
    queue.enqueue_dependents(queue.fetch_job(FIRST))  # what the job's ending runs
    assert queue.job_ids.count(FOLLOWER) == 1


def test_a_follower_queued_by_its_jobs_ending_is_not_released_again(real_redis, redis_server):
    queue = finished_with_its_follower_deferred(real_redis, redis_server)
    queue.enqueue_dependents(queue.fetch_job(FIRST))
    assert not reuse.release_follower(queue, FOLLOWER)
    assert queue.job_ids.count(FOLLOWER) == 1


def test_a_follower_queued_by_its_jobs_ending_while_it_is_released_is_queued_once(real_redis, redis_server,
                                                                                  monkeypatch):
    """The two at once: the ending's enqueue_dependents lands between the release's reads and its write."""
    from rq.job import Job

    queue = finished_with_its_follower_deferred(real_redis, redis_server)
    fetch, raced = Job.fetch, []

    def fetch_then_race(job_id, connection=None, serializer=None):
        job = fetch(job_id, connection=connection, serializer=serializer)
        if job_id == FOLLOWER and not raced:
            raced.append(1)
            queue.enqueue_dependents(fetch(FIRST, connection=connection))
        return job

    monkeypatch.setattr(Job, "fetch", staticmethod(fetch_then_race))
    assert not reuse.release_follower(queue, FOLLOWER)  # it looked again and found it queued
    assert raced and queue.job_ids.count(FOLLOWER) == 1


def test_only_one_of_two_submits_takes_a_claim_over(real_redis):
    real_redis.set(reuse.PREFIX + "print", "gone-token")
    first = reuse.take_over(real_redis, "print", "gone-token", "t1", 60)
    second = reuse.take_over(real_redis, "print", "gone-token", "t2", 60)
    assert (first, second) == ("t1", "t1") and real_redis.get(reuse.PREFIX + "print") == b"t1"


def test_fingerprints_differ_by_owner_options_and_bytes():
    image = reuse.image_digest(b"image")
    base = reuse.fingerprint("acme", SPEC, image)
    assert base == reuse.fingerprint("acme", dict(reversed(list(SPEC.items()))), image)  # key order is no option
    assert len({base, reuse.fingerprint("other", SPEC, image), reuse.fingerprint("acme", {**SPEC, "x": 1}, image),
                reuse.fingerprint("acme", SPEC, reuse.image_digest(b"imagE"))}) == 4


def test_the_image_digest_is_blake3():
    """The published test vector of BLAKE3 (a cryptographic hash: a tenant cannot make two uploads share one)."""
    assert reuse.image_digest(b"").hex() == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"

