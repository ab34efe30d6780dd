"""A 202 means the job will end: accepted jobs survive Redis being SIGKILLed.

Each test starts its own stack (private redis-server with an append-only file,
rclone, a worker, gunicorn), accepts a burst of jobs that one worker cannot
finish at once, SIGKILLs Redis, and restarts it either from its append-only
file or empty (no persistence, or a failover to a replica that had nothing).
Every token that was answered 202 must end SUCCESS; none may ever be 404.
"""

from __future__ import annotations

import io
import shutil
import signal
import time

import pytest
import requests
from rq import Queue

from bench.images import photo
from resizer.connections import make_redis
from resizer.local import port_open, wait_for
from settings import Settings
from tests.conftest import Api, b64, dump_logs, start_stack

pytestmark = pytest.mark.e2e

BURST = 24


@pytest.fixture(scope="module")
def image() -> bytes:
    buf = io.BytesIO()
    photo(1600, 1200).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def make_stack(tmp_path):
    stacks = []

    def make(persistence: str):
        stack = start_stack(tmp_path, workers=1, redis_persistence=persistence, RECONCILE_INTERVAL=1,
                            RECONCILE_GRACE=2, MAINTENANCE_INTERVAL=1)
        stacks.append(stack)
        stack.run_supervisor(interval=0.2)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


def accept_burst(api: Api, image: bytes) -> list[str]:
    tokens = []
    for _ in range(BURST):  # PNG output at full size: a few hundred ms of work each
        r = api.post({"imageData": b64(image), "width": 1600, "format": "png"})
        assert r.status_code == 202, r.text
        tokens.append(r.json()["token"])
    return tokens


def kill_redis(stack, *, keep_data: bool) -> None:
    port = stack.redis_port
    stack.kill("redis", signal.SIGKILL)
    stack.procs["redis"].popen.wait(10)
    if not keep_data:
        shutil.rmtree(stack.workdir / "redis")
        (stack.workdir / "redis").mkdir()
    stack.spawn(stack.procs["redis"])
    wait_for(lambda: port_open("127.0.0.1", port), "redis-server after the crash")


def wait_all_end(api: Api, tokens: list[str], stack, deadline: float = 180) -> dict[str, str]:
    """Poll every token until it ends; a 404 for an accepted token fails at once, a 503 is waited out."""
    ended: dict[str, str] = {}
    end = time.monotonic() + deadline
    while len(ended) < len(tokens) and time.monotonic() < end:
        for token in tokens:
            if token in ended:
                continue
            try:
                r = api.status(token)
            except requests.ConnectionError:
                continue
            assert r.status_code != 404, f"accepted job {token} was forgotten: {r.text}\n{dump_logs(stack)}"
            if r.status_code == 200 and r.json()["status"] in ("SUCCESS", "FAILURE"):
                ended[token] = r.json()["status"]
        time.sleep(0.2)
    missing = [t for t in tokens if t not in ended]
    assert not missing, f"{len(missing)} accepted job(s) never ended\n{dump_logs(stack)}"
    return ended


CASES = {
    # fsync before every reply: small originals ride in Redis with their job, and both survive
    "fsync always, restarted from its AOF": ("always", True),
    # the case: the last second of acknowledged writes may be lost; originals wait in storage
    "fsync every second, restarted from its AOF": ("everysec", True),
    # no persistence (or a failover to an empty replica): everything is reconciled from storage
    "no persistence, restarted empty": ("none", False),
}


@pytest.mark.parametrize("case", CASES)
def test_every_accepted_job_ends_when_redis_is_killed(make_stack, image, case):
    persistence, keep_data = CASES[case]
    stack = make_stack(persistence)
    api = Api(f"http://127.0.0.1:{stack.port}", stack)
    settings = Settings.from_env(stack.env)
    redis = make_redis(settings)
    tokens = accept_burst(api, image)
    waiting = Queue(settings.queue_name, connection=redis).job_ids
    assert len(waiting) >= BURST // 2, "the burst must still be queued when Redis dies"
    where = "redis" if redis.exists(f"resizer:original:{tokens[-1]}") else "storage"
    assert where == ("redis" if persistence == "always" else "storage"), where
    kill_redis(stack, keep_data=keep_data)
    if not keep_data:
        assert not any(redis.exists(f"rq:job:{t}") for t in waiting), "Redis came back with the jobs"
    ended = wait_all_end(api, tokens, stack)
    assert set(ended.values()) == {"SUCCESS"}, ended
