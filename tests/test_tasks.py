"""The worker's job without a worker: how each way a job can end is classified and recorded.

Every ending (success, permanent failure, timeout, a transient failure on the
last attempt, a worker lost on the last attempt, a bug) must leave the same
four things: the durable record in storage, the published result in Redis
(which wakes long-polling clients), the metric, and the queued webhook.  A
transient failure with attempts left must leave none of them, only a retry.
(What happens when a worker really dies is tested live in test_reliability.py.)
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import fakeredis
import pytest
from PIL import Image
from rq.exceptions import AbandonedJobError
from rq.timeouts import JobTimeoutException

from resizer import records, tasks
from resizer.errors import StorageUnavailable
from resizer.imaging import ImageLimits
from resizer.metrics import PREFIX as METRICS
from resizer.options import Limits, parse_options
from resizer.reaper import Reaper
from resizer.storage import legacy_output_prefix, manifest_key, original_key, output_prefix
from resizer.worker import WorkerContext
from settings import Settings

from fakes import FakeStorage, fake_job

TOKEN = "0b5e1f3c-6d0a-4c47-9f0e-2b0c8a1e9d11"
TENANT = "acme"


def png(size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def ctx():
    settings = Settings.from_env({"APP_ENV": "testing", "WEBHOOK_SECRET": "s"})
    storage = FakeStorage()
    context = WorkerContext(settings=settings, storage=storage, limits=ImageLimits(10**8, 8192, 300),
                            pool=ThreadPoolExecutor(2), reaper=Reaper(storage, background=False))
    yield context
    context.pool.shutdown()


@pytest.fixture
def connection():
    return fakeredis.FakeRedis()


def spec(callback: str | None = "https://hooks.example.com/done", **options):
    return parse_options({"width": 20, **options, **({"callback_url": callback} if callback else {})}, Limits())


def submit(ctx, data: bytes) -> None:
    ctx.storage.put(original_key(TOKEN), data, "image/png")


def outcome(ctx, connection) -> dict:
    """Everything an ending leaves behind, read back (storage answers again for the reading)."""
    ctx.storage.down = False
    return {
        "durable": records.read_durable(ctx.storage, TENANT, TOKEN),
        "published": records.read_result(connection, TOKEN, TENANT),
        "woken": connection.llen(records.DONE_PREFIX + TOKEN),
        "metrics": {k.decode(): int(v) for k, v in connection.hgetall(METRICS + "jobs").items()},
        "webhooks": connection.llen(f"rq:queue:{ctx.settings.queue_name}-webhooks"),
        "reaped": ctx.reaper.pending(),
    }


def run(ctx, connection, job_spec, *, retries_left=2):
    job = fake_job(connection, TOKEN, TENANT, job_spec.to_dict(), retries_left=retries_left)
    return job, tasks.run(ctx, job, TOKEN, TENANT, job_spec, None)


def test_success_leaves_outputs_record_result_metric_and_webhook(ctx, connection):
    submit(ctx, png())
    _, record = run(ctx, connection, spec())
    seen = outcome(ctx, connection)
    assert record["status"] == "SUCCESS" and record["variants"]["default"]["width"] == 20
    assert seen["durable"]["variants"] == record["variants"] == seen["published"]["variants"]
    assert seen["woken"] == 1 and seen["metrics"] == {"success|": 1}
    assert seen["webhooks"] == 1 and seen["reaped"] == 1
    key = record["variants"]["default"]["key"]
    assert Image.open(io.BytesIO(ctx.storage.objects[key][0])).size == (20, 15)


def test_a_success_keeps_its_record_on_its_outputs_not_in_an_object_of_its_own(ctx, connection):
    submit(ctx, png())
    _, record = run(ctx, connection, spec(callback=None, variants=[{"name": "a", "width": 10},
                                                                   {"name": "b", "width": 30, "format": "webp"}]))
    assert manifest_key(TENANT, TOKEN) not in ctx.storage.objects
    assert records.read_durable(ctx.storage, TENANT, TOKEN) == record
    # a server that lost the metadata (rclone keeps it in memory): the record is rebuilt from the
    # outputs, once the job has ended (its original is gone)
    ctx.reaper.flush()
    for key in [v["key"] for v in record["variants"].values()]:
        data, content_type, _ = ctx.storage.objects[key]
        ctx.storage.objects[key] = (data, content_type, {})
    rebuilt = records.read_durable(ctx.storage, TENANT, TOKEN)
    assert rebuilt["status"] == "SUCCESS" and rebuilt["variants"] == record["variants"]
    assert records.read_durable(ctx.storage, TENANT, TOKEN, rebuild=False) is None
    # an output missing (a crash between two uploads) while the original still waits: not a success
    ctx.storage.put(original_key(TOKEN), png(), "image/png")
    del ctx.storage.objects[record["variants"]["b"]["key"]]
    assert records.read_durable(ctx.storage, TENANT, TOKEN) is None
    assert records.read_durable(ctx.storage, TENANT, TOKEN, rebuild=False) is None


def test_records_written_before_the_outputs_fanned_out_are_still_read(ctx, connection):
    """Outputs written under ``outputs/<tenant>/<token>/`` (before the fan-out) are read until they expire."""
    submit(ctx, png())
    _, record = run(ctx, connection, spec(callback=None))
    ctx.reaper.flush()
    legacy = legacy_output_prefix(TENANT, TOKEN)
    moved = {**record, "variants": {name: {**v, "key": legacy + v["key"].rsplit("/", 1)[1]}
                                    for name, v in record["variants"].items()}}
    for old, new in zip(record["variants"].values(), moved["variants"].values()):
        data, content_type, _ = ctx.storage.objects.pop(old["key"])
        ctx.storage.put(new["key"], data, content_type, metadata={records.RECORD_META: records.pack(moved)})
    assert not ctx.storage.list(output_prefix(TENANT, TOKEN))
    assert records.read_durable(ctx.storage, TENANT, TOKEN) == moved
    ctx.storage.put(legacy + "manifest.json", b'{"status": "FAILURE", "error": {"code": "x"}}', "application/json")
    assert records.read_durable(ctx.storage, TENANT, TOKEN)["status"] == "FAILURE"  # a legacy failure's manifest
    ctx.storage.put(manifest_key(TENANT, TOKEN), json.dumps(record).encode(), "application/json")
    assert records.read_durable(ctx.storage, TENANT, TOKEN) == record  # the current layout is read first


def test_no_webhook_without_a_callback_url(ctx, connection):
    submit(ctx, png())
    run(ctx, connection, spec(callback=None))
    assert outcome(ctx, connection)["webhooks"] == 0


def assert_failed(ctx, connection, job, code: str) -> None:
    seen = outcome(ctx, connection)
    assert seen["published"]["status"] == "FAILURE" and seen["published"]["error"]["code"] == code
    assert seen["woken"] == 1
    assert seen["metrics"] == {f"failure|{code}": 1}
    assert seen["webhooks"] == 1
    assert job.retries_left == 0 and job.meta["error"]["code"] == code


def test_a_corrupt_image_fails_at_once_with_every_record(ctx, connection):
    submit(ctx, png()[:60])  # the header survives, the pixels do not
    job = fake_job(connection, TOKEN, TENANT, spec().to_dict())
    with pytest.raises(Exception):
        tasks.run(ctx, job, TOKEN, TENANT, spec(), None)
    assert_failed(ctx, connection, job, "corrupt_image")
    assert outcome(ctx, connection)["durable"]["error"]["code"] == "corrupt_image"


def test_a_timeout_ends_the_job(ctx, connection, monkeypatch):
    submit(ctx, png())

    def slow(*args, **kwargs):
        raise JobTimeoutException("too slow")

    monkeypatch.setattr(tasks, "process", slow)
    job = fake_job(connection, TOKEN, TENANT, spec().to_dict())
    with pytest.raises(JobTimeoutException):
        tasks.run(ctx, job, TOKEN, TENANT, spec(), None)
    assert_failed(ctx, connection, job, "processing_timeout")


def test_a_bug_ends_the_job_as_internal_error(ctx, connection, monkeypatch):
    submit(ctx, png())
    monkeypatch.setattr(tasks, "process", lambda *a, **k: 1 / 0)
    job = fake_job(connection, TOKEN, TENANT, spec().to_dict())
    with pytest.raises(ZeroDivisionError):
        tasks.run(ctx, job, TOKEN, TENANT, spec(), None)
    assert_failed(ctx, connection, job, "internal_error")


def test_a_transient_failure_with_attempts_left_is_only_a_retry(ctx, connection):
    submit(ctx, png())
    ctx.storage.down = True
    job = fake_job(connection, TOKEN, TENANT, spec().to_dict(), retries_left=2)
    with pytest.raises(StorageUnavailable):
        tasks.run(ctx, job, TOKEN, TENANT, spec(), None)
    seen = outcome(ctx, connection)
    assert seen["published"] is None and seen["woken"] == 0 and seen["webhooks"] == 0
    assert seen["metrics"] == {"retry|storage_unavailable": 1}
    assert job.retries_left == 2 and job.meta["error"]["code"] == "storage_unavailable"


def test_a_transient_failure_on_the_last_attempt_ends_the_job(ctx, connection):
    submit(ctx, png())
    ctx.storage.down = True  # down through every retry: this is the last one
    job = fake_job(connection, TOKEN, TENANT, spec().to_dict(), retries_left=0)
    with pytest.raises(StorageUnavailable):
        tasks.run(ctx, job, TOKEN, TENANT, spec(), None)
    assert_failed(ctx, connection, job, "storage_unavailable")


def test_a_transient_failure_on_the_last_attempt_keeps_a_record_that_outlives_redis(ctx, connection):
    submit(ctx, png())
    job = fake_job(connection, TOKEN, TENANT, spec().to_dict(), retries_left=0)
    real_put = ctx.storage.put

    def outputs_fail(key, *args, **kwargs):  # storage refuses the outputs, then comes back for the record
        if "/default." in key:
            raise StorageUnavailable("Object storage is unreachable (fake).")
        return real_put(key, *args, **kwargs)

    ctx.storage.put = outputs_fail
    with pytest.raises(StorageUnavailable):
        tasks.run(ctx, job, TOKEN, TENANT, spec(), None)
    assert outcome(ctx, connection)["durable"]["error"]["code"] == "storage_unavailable"


def test_a_worker_lost_on_the_last_attempt_is_ended_by_the_failure_callback(ctx, connection, monkeypatch):
    monkeypatch.setattr(tasks, "context", lambda: ctx)
    job = fake_job(connection, TOKEN, TENANT, spec().to_dict(), retries_left=0)
    tasks.on_failure(job, connection, AbandonedJobError, AbandonedJobError(), None)
    assert_failed(ctx, connection, job, "worker_lost")
    assert outcome(ctx, connection)["durable"]["error"]["code"] == "worker_lost"


def test_a_failure_that_escaped_the_job_is_ended_by_the_safety_net(ctx, connection, monkeypatch):
    monkeypatch.setattr(tasks, "context", lambda: ctx)
    job = fake_job(connection, TOKEN, TENANT, spec().to_dict(), retries_left=0)
    tasks.on_failure(job, connection, KeyError, KeyError("x"), None)
    assert_failed(ctx, connection, job, "internal_error")


def test_a_job_that_ended_itself_is_left_alone_by_the_safety_net(ctx, connection, monkeypatch):
    monkeypatch.setattr(tasks, "context", lambda: ctx)
    submit(ctx, png())
    run(ctx, connection, spec())  # ends SUCCESS
    job = fake_job(connection, TOKEN, TENANT, spec().to_dict(), retries_left=0)
    # e.g. its worker was killed after the ending, before RQ marked the job finished
    tasks.on_failure(job, connection, AbandonedJobError, AbandonedJobError(), None)
    seen = outcome(ctx, connection)
    assert seen["published"]["status"] == "SUCCESS" and seen["metrics"] == {"success|": 1}


def test_a_success_whose_publishing_was_lost_is_published_by_the_safety_net(ctx, connection, monkeypatch):
    """In a worker a success is published with RQ's ending of the job; if that ending fails on the last
    attempt, the job's success is only in storage: the safety net publishes it, with its webhook, once."""
    monkeypatch.setattr(tasks, "context", lambda: ctx)
    submit(ctx, png())
    ctx.ending.open()  # as the worker does around a job
    _, record = run(ctx, connection, spec())
    ctx.ending.close()  # as the worker does when the ending failed: what joined it never went out
    assert outcome(ctx, connection)["published"] is None
    job = fake_job(connection, TOKEN, TENANT, spec().to_dict(), retries_left=0)
    tasks.on_failure(job, connection, ConnectionError, ConnectionError("Redis went away"), None)
    seen = outcome(ctx, connection)
    assert seen["published"] == record and seen["woken"] == 1 and seen["metrics"] == {"success|": 1}
    assert seen["webhooks"] == 1 and seen["reaped"] == 1


def test_an_abandoned_job_with_retries_left_is_left_to_rq(monkeypatch, connection):
    def refuse():
        raise AssertionError("the callback acted")
    monkeypatch.setattr(tasks, "context", refuse)
    job = fake_job(connection, TOKEN, TENANT, spec().to_dict(), retries_left=2)
    tasks.on_failure(job, connection, AbandonedJobError, AbandonedJobError(), None)


def test_a_redis_failure_on_the_last_attempt_ends_the_job(ctx, connection, monkeypatch):
    import redis as redis_lib

    submit(ctx, png())

    def redis_down(*args, **kwargs):
        raise redis_lib.exceptions.ConnectionError("Redis went away")

    monkeypatch.setattr(tasks, "process", redis_down)
    job = fake_job(connection, TOKEN, TENANT, spec().to_dict(), retries_left=0)
    with pytest.raises(redis_lib.exceptions.ConnectionError):
        tasks.run(ctx, job, TOKEN, TENANT, spec(), None)
    assert_failed(ctx, connection, job, "service_unavailable")


def test_a_failure_that_cannot_be_recorded_keeps_its_original(ctx, connection):
    submit(ctx, png()[:60])  # fails: corrupt
    ctx.storage.down = False
    real_put = ctx.storage.put

    def records_refused(key, *args, **kwargs):
        if key.endswith("manifest.json"):
            raise StorageUnavailable("Object storage is unreachable (fake).")
        return real_put(key, *args, **kwargs)

    ctx.storage.put = records_refused
    job = fake_job(connection, TOKEN, TENANT, spec().to_dict())
    with pytest.raises(Exception):
        tasks.run(ctx, job, TOKEN, TENANT, spec(), None)
    assert records.read_result(connection, TOKEN, TENANT)["error"]["code"] == "corrupt_image"
    assert ctx.reaper.pending() == 0 and original_key(TOKEN) in ctx.storage.objects  # kept for the reconciler


def test_a_rerun_after_the_original_was_reaped_returns_the_earlier_success(ctx, connection):
    submit(ctx, png())
    _, first = run(ctx, connection, spec())
    ctx.reaper.flush()
    assert original_key(TOKEN) not in ctx.storage.objects
    _, again = run(ctx, connection, spec())
    assert again["variants"] == first["variants"]
