"""The worker-side failure callback, without a worker: what it must leave alone.

(What it does when a worker really dies on a job's last attempt is tested live
in tests/test_reliability.py.)
"""

from types import SimpleNamespace

import pytest
from rq.exceptions import AbandonedJobError

from resizer import tasks
from resizer.errors import CorruptImage


@pytest.fixture
def no_context(monkeypatch):
    def refuse():
        raise AssertionError("the callback acted")
    monkeypatch.setattr(tasks, "context", refuse)


def test_failures_the_job_records_itself_are_left_alone(no_context):
    job = SimpleNamespace(retries_left=0, args=("t", "public", {}, None))
    tasks.on_failure(job, None, CorruptImage, CorruptImage("x"), None)
    tasks.on_failure(job, None, ValueError, ValueError("x"), None)


def test_an_abandoned_job_with_retries_left_is_left_to_rq(no_context):
    job = SimpleNamespace(retries_left=2, args=("t", "public", {}, None))
    tasks.on_failure(job, None, AbandonedJobError, AbandonedJobError(), None)


def test_an_abandoned_job_on_its_last_attempt_is_ended(monkeypatch):
    ended = []
    monkeypatch.setattr(tasks, "context", lambda: "ctx")
    monkeypatch.setattr(tasks, "_fail", lambda ctx, job, token, tenant, error, created: ended.append((token, error.code)))
    monkeypatch.setattr(tasks, "_callback", lambda ctx, job, token, tenant, spec: ended.append(("callback", token)))
    from resizer.options import Limits, parse_options

    spec = parse_options({"width": 10}, Limits()).to_dict()
    job = SimpleNamespace(retries_left=None, args=("tok", "public", spec, None), created_at=None)
    tasks.on_failure(job, None, AbandonedJobError, AbandonedJobError(), None)
    assert ended == [("tok", "worker_lost"), ("callback", "tok")]
