"""Where an upload waits for its job: Redis (small, within a budget, only on a Redis that keeps
acknowledged writes) or storage, and how it is given back when the job ends."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from rq import Queue

from resizer import durability, originals, tasks
from resizer.imaging import ImageLimits
from resizer.jobs import Jobs
from resizer.options import Limits, parse_options
from resizer.reaper import Reaper
from resizer.storage import original_key
from resizer.worker import WorkerContext
from settings import Settings
from tests.conftest import image_bytes

from fakes import FakeStorage, fake_job

DURABLE = durability.Durability(True, False, 0)


@pytest.fixture
def settings(redis_server):
    return Settings.from_env({"APP_ENV": "testing", "REDIS_URL": redis_server, "REDIS_ORIGINAL_MAX_BYTES": "20000",
                              "REDIS_ORIGINALS_BUDGET": "10000"})


@pytest.fixture
def storage():
    return FakeStorage()


def jobs(settings, real_redis, storage, monkeypatch, durable=DURABLE) -> Jobs:
    monkeypatch.setattr(durability, "probe", lambda connection: durable)
    return Jobs(settings, real_redis, storage, waiter=real_redis)


def spec():
    return parse_options({"width": 10}, Limits())


def meter(real_redis) -> int:
    return int(real_redis.get(originals.REDIS_BYTES) or 0)


def test_a_small_upload_rides_in_redis_with_its_job(settings, real_redis, storage, monkeypatch):
    data = image_bytes((60, 40))
    token = jobs(settings, real_redis, storage, monkeypatch).submit(data, "image/jpeg", spec()).token
    assert original_key(token) not in storage.objects
    assert Queue(settings.queue_name, connection=real_redis).job_ids == [token]
    assert originals.fetch(storage, token, real_redis) == (data, "redis")
    assert meter(real_redis) == real_redis.strlen(originals.REDIS_PREFIX + token) > len(data)


def test_an_upload_goes_to_redis_as_it_is_never_joined_to_its_header(redis_server, storage, monkeypatch):
    """Joining the header and a multi-MB upload is a fresh buffer the API's allocator faults in page by page
    (a 3.8 MB upload: ~2.5 ms of CPU): the service's Redis client sends the upload object itself."""
    from resizer.connections import make_redis

    settings = Settings.from_env({"APP_ENV": "testing", "REDIS_URL": redis_server,
                                  "REDIS_ORIGINAL_MAX_BYTES": "300000", "REDIS_ORIGINALS_BUDGET": "1000000"})
    client = make_redis(settings)
    sent = []
    send = redis.connection.Connection.send_packed_command
    monkeypatch.setattr(redis.connection.Connection, "send_packed_command",
                        lambda self, command, *a, **kw: sent.extend(command) or send(self, command, *a, **kw))
    data = image_bytes((300, 200), quality=100) + bytes(200_000)  # past redis-py's 6,000-byte cut-off
    try:
        token = jobs(settings, client, storage, monkeypatch).submit(data, "image/jpeg", spec()).token
        assert any(chunk is data for chunk in sent)
        assert originals.fetch(storage, token, client) == (data, "redis")
    finally:
        client.flushdb()
        client.close()


def test_large_uploads_and_a_full_budget_go_to_storage(settings, real_redis, storage, monkeypatch):
    service = jobs(settings, real_redis, storage, monkeypatch)
    big = service.submit(b"x" * 30_000, "image/jpeg", spec()).token  # over REDIS_ORIGINAL_MAX_BYTES
    assert original_key(big) in storage.objects and meter(real_redis) == 0
    small = [service.submit(image_bytes((60, 40), color=(i, 0, 0)), "image/jpeg", spec()).token for i in range(40)]
    in_redis = [t for t in small if real_redis.exists(originals.REDIS_PREFIX + t)]
    in_storage = [t for t in small if original_key(t) in storage.objects]
    assert in_redis and in_storage and len(in_redis) + len(in_storage) == 40
    assert meter(real_redis) <= settings.redis_originals_budget
    assert meter(real_redis) == sum(real_redis.strlen(originals.REDIS_PREFIX + t) for t in in_redis)


def test_the_fingerprints_claim_and_the_budget_share_one_round_trip_before_the_transaction(
        settings, real_redis, storage, monkeypatch):
    """Under load every write waits for Redis's fsync: a submit makes two writes, the claim and the transaction."""
    service = jobs(settings, real_redis, storage, monkeypatch)
    service.submit(image_bytes((50, 40)), "image/jpeg", spec())  # first use: RQ asks for Redis's version once
    sent = []
    pipeline_class = type(real_redis.pipeline())
    execute, command = pipeline_class.execute, type(real_redis).execute_command

    def counting_pipeline(pipe, *args, **kwargs):
        sent.append(("transaction" if pipe.transaction else "pipeline", [c[0][0] for c in pipe.command_stack]))
        return execute(pipe, *args, **kwargs)

    def counting_command(conn, *args, **kwargs):
        sent.append(("command", [args[0]]))
        return command(conn, *args, **kwargs)

    monkeypatch.setattr(pipeline_class, "execute", counting_pipeline)
    monkeypatch.setattr(type(real_redis), "execute_command", counting_command)
    service.submit(image_bytes((60, 40)), "image/jpeg", spec())
    assert sent[0] == ("pipeline", ["SET", "GET", "INCRBY"])
    assert [kind for kind, _ in sent] == ["pipeline", "transaction"], sent
    assert "SET" in sent[1][1]  # the original rides in the job's transaction


def test_identical_work_gives_its_reservation_back(settings, real_redis, storage, monkeypatch):
    """The second of two identical uploads follows the first's job: only the first's original is in Redis."""
    service = jobs(settings, real_redis, storage, monkeypatch)
    data = image_bytes((60, 40))
    first = service.submit(data, "image/jpeg", spec()).token
    second = service.submit(data, "image/jpeg", spec()).token
    assert original_key(second) in storage.objects and not real_redis.exists(originals.REDIS_PREFIX + second)
    assert meter(real_redis) == real_redis.strlen(originals.REDIS_PREFIX + first)


def test_a_submit_that_fails_after_reserving_gives_the_bytes_back(settings, real_redis, storage, monkeypatch):
    from resizer import reuse

    service = jobs(settings, real_redis, storage, monkeypatch)
    data = image_bytes((60, 40))
    first = service.submit(data, "image/jpeg", spec()).token

    def blip(*args, **kwargs):
        raise redis.exceptions.ConnectionError("blip")

    monkeypatch.setattr(reuse, "state_of", blip)  # asking about the identical first job fails
    with pytest.raises(redis.exceptions.ConnectionError):
        service.submit(data, "image/jpeg", spec())
    assert meter(real_redis) == real_redis.strlen(originals.REDIS_PREFIX + first)


def test_a_redis_that_may_lose_acknowledged_writes_gets_no_originals(settings, real_redis, storage, monkeypatch):
    service = jobs(settings, real_redis, storage, monkeypatch, durable=durability.NOT_DURABLE)
    token = service.submit(image_bytes((60, 40)), "image/jpeg", spec()).token
    assert original_key(token) in storage.objects
    assert not real_redis.keys(originals.REDIS_PREFIX + "*") and meter(real_redis) == 0


def test_probe_reads_what_redis_keeps(real_redis):
    # the test server runs without an append-only file
    assert durability.probe(real_redis) == durability.NOT_DURABLE
    real_redis.config_set("appendonly", "yes")
    try:
        real_redis.config_set("appendfsync", "everysec")
        assert not durability.probe(real_redis).keeps_acknowledged  # the last second may be lost (7.0: no WAITAOF)
        real_redis.config_set("appendfsync", "always")
        assert durability.probe(real_redis).keeps_acknowledged
    finally:
        real_redis.config_set("appendonly", "no")


def test_the_job_gives_its_original_back_when_it_ends(settings, real_redis, storage, monkeypatch):
    token = jobs(settings, real_redis, storage, monkeypatch).submit(image_bytes((60, 40)), "image/jpeg",
                                                                    spec()).token
    ctx = WorkerContext(settings=settings, storage=storage, limits=ImageLimits(10**8, 8192, 300),
                        pool=ThreadPoolExecutor(2), reaper=Reaper(storage, background=False))
    job = fake_job(real_redis, token, "public", spec().to_dict())
    job.meta = Queue(settings.queue_name, connection=real_redis).fetch_job(token).meta  # says where the image is
    assert job.meta["original"] == "redis"
    record = tasks.run(ctx, job, token, "public", spec(), None)
    assert record["status"] == "SUCCESS"
    assert not real_redis.exists(originals.REDIS_PREFIX + token) and meter(real_redis) == 0
    assert ctx.reaper.pending() == 0  # nothing to delete in storage


def test_the_meter_is_corrected_from_the_keys(real_redis):
    real_redis.set(originals.REDIS_PREFIX + "a", b"12345")
    real_redis.set(originals.REDIS_BYTES, 999)  # drift: a key expired without being released
    assert originals.correct_meter(real_redis) == 5 and meter(real_redis) == 5


def test_the_envelope_is_streamed_not_joined():
    from resizer.originals import _Chain

    body = _Chain(b"head\n", b"0123456789")
    assert len(body) == 15 and body.read(3) == b"hea" and body.read(4) == b"d\n01"
    body.seek(0)
    assert body.read() == b"head\n0123456789" and body.tell() == 15
    storage = FakeStorage()
    originals.stash(storage, "t", b"\x89PNG...", "image/png", "acme", {"outputs": []}, None)
    assert originals.fetch(storage, "t") == (b"\x89PNG...", "storage")


def test_redis_holds_no_more_for_an_original_than_the_budget_counts(redis_server, real_redis, storage, monkeypatch):
    """The meter counts the value's length; a value built by APPEND would take up to twice that in Redis."""
    roomy = Settings.from_env({"APP_ENV": "testing", "REDIS_URL": redis_server, "REDIS_ORIGINAL_MAX_BYTES": "1000000",
                               "REDIS_ORIGINALS_BUDGET": "2000000"})
    data = image_bytes() + b"\0" * 300_000
    token = jobs(roomy, real_redis, storage, monkeypatch).submit(data, "image/jpeg", spec()).token
    key = originals.REDIS_PREFIX + token
    assert real_redis.exists(key) and meter(real_redis) == real_redis.strlen(key)
    assert real_redis.memory_usage(key) <= real_redis.strlen(key) * 1.25  # the allocator's size class, no more


def test_releasing_an_original_gives_its_bytes_back_once(real_redis):
    real_redis.set(originals.REDIS_PREFIX + "t1", b"x" * 300)
    real_redis.set(originals.REDIS_BYTES, 1000)
    assert originals.release_from_redis(real_redis, "t1") == 300
    assert originals.release_from_redis(real_redis, "t1") == 0  # a second release (a rerun, the API) is a no-op
    assert meter(real_redis) == 700 and not real_redis.exists(originals.REDIS_PREFIX + "t1")


def test_concurrent_releases_of_one_original_give_its_bytes_back_once(real_redis):
    for n in range(40):
        real_redis.set(originals.REDIS_PREFIX + f"t{n}", b"x" * 100)
    real_redis.set(originals.REDIS_BYTES, 4000)
    with ThreadPoolExecutor(8) as pool:
        released = list(pool.map(lambda n: originals.release_from_redis(real_redis, f"t{n % 40}"), range(320)))
    assert sum(map(bool, released)) == 40 and meter(real_redis) == 0


def test_an_ending_releases_its_original_in_the_round_trip_that_publishes_the_result(real_redis):
    from resizer.endings import _publish

    real_redis.set(originals.REDIS_PREFIX + "t2", b"y" * 123)
    real_redis.set(originals.REDIS_BYTES, 123)
    sent = []
    execute = type(real_redis.pipeline()).execute

    def counting(pipe, *args, **kwargs):
        sent.append([c[0][0] for c in pipe.command_stack])
        return execute(pipe, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(real_redis.pipeline()), "execute", counting)
        released = _publish(real_redis, "t2", "public", {"status": "SUCCESS"}, 60, ("success", "", {}), True)
    assert released is True and meter(real_redis) == 0
    assert len(sent) == 1 and "EVAL" in sent[0] and "SET" in sent[0]  # one pipeline: result and release together


def test_a_failed_publish_still_releases_the_original(real_redis, monkeypatch):
    from resizer.endings import _publish

    real_redis.set(originals.REDIS_PREFIX + "t3", b"z" * 50)
    real_redis.set(originals.REDIS_BYTES, 50)

    def broken(pipe, *args, **kwargs):
        raise redis.exceptions.ConnectionError("blip")

    monkeypatch.setattr(type(real_redis.pipeline()), "execute", broken)
    assert _publish(real_redis, "t3", "public", {"status": "SUCCESS"}, 60, ("success", "", {}), True) is True
    assert meter(real_redis) == 0 and not real_redis.exists(originals.REDIS_PREFIX + "t3")
