"""The reconciler: an accepted job that Redis lost is queued again from its original in storage."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from rq import Queue

from resizer import originals, records
from resizer.queueing import enqueue_resize
from resizer.reconcile import LOCK, reconcile
from resizer.storage import manifest_key, original_key
from settings import Settings

from fakes import FakeStorage

SPEC = {"outputs": [{"name": "default", "width": 10, "height": None, "fit": "contain", "gravity": "center",
                     "enlarge": False, "format": "jpeg", "quality": None, "background": [255, 255, 255]}],
        "callback_url": None}
TOKENS = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(5)]


@pytest.fixture
def settings():
    return replace(Settings.from_env({"APP_ENV": "testing"}), reconcile_grace=60)


@pytest.fixture
def connection(real_redis):
    return real_redis  # RQ's unique enqueue runs a Lua script


@pytest.fixture
def storage():
    storage = FakeStorage()
    for token in TOKENS:
        originals.stash(storage, token, b"\x89PNG fake", "image/png", "acme", SPEC, f"req-{token[-1]}")
        storage.modified[original_key(token)] -= timedelta(seconds=120)  # accepted two minutes ago
    return storage


def queued(connection, settings) -> list[str]:
    return Queue(settings.queue_name, connection=connection).job_ids


def test_lost_jobs_are_queued_again_with_their_arguments(connection, storage, settings):
    assert reconcile(connection, storage, settings) == TOKENS
    queue = Queue(settings.queue_name, connection=connection)
    assert queue.job_ids == TOKENS
    job = queue.fetch_job(TOKENS[2])
    assert job.args == (TOKENS[2], "acme", SPEC, "req-2") and job.meta["tenant"] == "acme"


def test_jobs_redis_knows_or_that_ended_are_left_alone(connection, storage, settings):
    queue = Queue(settings.queue_name, connection=connection)
    enqueue_resize(queue, settings, TOKENS[0], "acme", SPEC, None)  # queued or running
    records.publish(connection, TOKENS[1], "acme", {"status": "SUCCESS", "variants": {}}, 60)  # ended
    storage.put(manifest_key("acme", TOKENS[2]), b'{"status": "FAILURE"}', "application/json")  # ended, Redis lost it
    assert reconcile(connection, storage, settings) == TOKENS[3:]
    assert original_key(TOKENS[2]) not in storage.objects  # its stray original is removed


def test_recent_originals_get_time_to_be_queued(connection, storage, settings):
    storage.modified[original_key(TOKENS[4])] = storage.modified[original_key(TOKENS[4])] + timedelta(seconds=119)
    assert TOKENS[4] not in reconcile(connection, storage, settings)


def test_one_worker_looks_per_interval(connection, storage, settings):
    assert len(reconcile(connection, storage, settings)) == 5
    connection.delete(*[f"rq:job:{t}" for t in TOKENS])  # lost again at once
    assert reconcile(connection, storage, settings) == []  # another worker looked less than an interval ago
    assert connection.ttl(LOCK) > 0
    assert len(reconcile(connection, storage, settings, force=True)) == 5


def test_objects_without_a_jobs_metadata_are_not_queued(connection, settings):
    storage = FakeStorage()
    storage.put(original_key(TOKENS[0]), b"stray", "image/png")
    storage.modified[original_key(TOKENS[0])] -= timedelta(seconds=120)
    assert reconcile(connection, storage, settings) == []
