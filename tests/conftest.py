"""Shared fixtures.

Unit tests build the app with an in-process S3 (moto) and fakeredis.  End-to-end
tests (marker ``e2e``) start the real processes through ``resizer.local.Stack``,
exactly as ``make run`` does: a private ``redis-server`` on a free port,
``rclone serve s3`` (which checks SigV4 signatures and presigned-URL expiry),
RQ workers and gunicorn.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import time
from pathlib import Path
from typing import Callable, TypeVar

import pytest
import requests
from hypothesis import settings as hypothesis_settings
from PIL import Image

from resizer.local import Stack, free_port
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
GOOD = sorted((CORPUS / "good").iterdir()) if (CORPUS / "good").is_dir() else []
BAD = sorted((CORPUS / "bad").iterdir()) if (CORPUS / "bad").is_dir() else []

# In CI, property tests and fuzzing replay the same examples on every run (a failure found
# locally with random examples is reported with its seed; CI must not be a lottery).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

# The original project's test image: a 1x1 PNG.
ORIGINAL_PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mP8Xw8AAoMBgDTD2qgAAAAASUVORK5CYII="


def pytest_collection_modifyitems(config, items):
    if not GOOD or not BAD:
        raise pytest.UsageError(f"the shared test corpus is missing at {CORPUS}")


T = TypeVar("T")


def wait_until(predicate: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    The one way tests wait for a condition (never a fixed sleep): fails with
    ``what`` and the last value seen when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last value: {value!r})")
        time.sleep(interval)


def image_bytes(size=(64, 48), mode="RGB", fmt="JPEG", color=(200, 30, 30), **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt, **save)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- unit-test app: moto S3 + fakeredis ----------------------------------------
@pytest.fixture
def settings() -> Settings:
    return Settings.from_env(
        {"APP_ENV": "testing", "S3_ENDPOINT_URL": "", "REDIS_URL": "redis://127.0.0.1:6379/0"},
        s3_endpoint_url=None,
    )


@pytest.fixture
def s3(settings):
    from moto import mock_aws

    from resizer.storage import Storage

    with mock_aws():
        storage = Storage(settings)
        storage.ensure_bucket()
        yield storage


@pytest.fixture
def fake_redis_server():
    """One in-process Redis server: every client made on it sees the same data (and wakes BLPOPs)."""
    import fakeredis

    return fakeredis.FakeServer()


@pytest.fixture
def fake_redis(fake_redis_server):
    import fakeredis

    return fakeredis.FakeRedis(server=fake_redis_server)


@pytest.fixture
def app(settings, s3, fake_redis, fake_redis_server):
    import fakeredis

    from resizer.app import create_app

    # long polls block on their own client, on the same fake server (so a publish wakes them)
    return create_app(settings, redis_client=fake_redis, storage=s3,
                      waiter=fakeredis.FakeRedis(server=fake_redis_server))


@pytest.fixture
def client(app):
    return app.test_client()


# -- end-to-end: real processes ---------------------------------------------------
class Api:
    """A small client of the running service, as a user's program would be."""

    def __init__(self, base: str, stack: Stack):
        self.base = base
        self.stack = stack
        self.http = requests.Session()

    def post(self, payload=None, *, data=None, headers=None, files=None, params=None) -> requests.Response:
        return self.http.post(f"{self.base}/api/v1/resize", json=payload, data=data, headers=headers,
                              files=files, params=params, timeout=30)

    def submit(self, image: bytes, **options) -> str:
        r = self.post({"imageData": b64(image), **options})
        assert r.status_code == 202, r.text
        return r.json()["token"]

    def status(self, token: str) -> requests.Response:
        return self.http.get(f"{self.base}/api/v1/resize/{token}", timeout=30)

    def wait(self, token: str, deadline: float = 60.0) -> dict:
        """Poll until the job ends, up to ``deadline`` seconds; its status body."""
        return self.wait_status(token, ("SUCCESS", "FAILURE"), deadline)

    def wait_status(self, token: str, wanted: tuple[str, ...] | str, deadline: float = 30.0) -> dict:
        """Poll until the job's status is one of ``wanted``; its status body."""
        wanted = (wanted,) if isinstance(wanted, str) else wanted

        def reached() -> dict | None:
            r = self.status(token)
            assert r.status_code == 200, r.text
            return r.json() if r.json()["status"] in wanted else None

        return wait_until(reached, f"job {token} to be {' or '.join(wanted)}", deadline)

    def download(self, url: str) -> requests.Response:
        return requests.get(url, timeout=30)


def start_stack(tmp: Path, workers: int = 2, redis_persistence: str = "everysec", **env) -> Stack:
    base_env = {
        "APP_ENV": "testing",
        "S3_BUCKET": "resizer-test",
        "LOG_LEVEL": "INFO",
        "ACCESS_LOG": "0",
        "WEB_CONCURRENCY": "2",
        **{k: str(v) for k, v in env.items()},
    }
    base_env.pop("S3_ENDPOINT_URL", None)
    # The runner inherits os.environ: make sure a developer's own settings do not leak in.
    for key in ("S3_ENDPOINT_URL", "S3_PUBLIC_ENDPOINT_URL", "REDIS_URL"):
        os.environ.pop(key, None)
    stack = Stack(
        workdir=tmp / "var",
        port=free_port(),
        s3_port=free_port(),
        dashboard_port=None,
        workers=workers,
        env=base_env,
        log_dir=tmp / "logs",
        own_redis=True,
        redis_persistence=redis_persistence,
    )
    return stack.start()


def dump_logs(stack: Stack) -> str:
    out = []
    if stack.log_dir and stack.log_dir.exists():
        for f in sorted(stack.log_dir.iterdir()):
            out.append(f"----- {f.name}\n" + f.read_text()[-4000:])
    return "\n".join(out)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    s = start_stack(tmp)
    s.run_supervisor()
    yield s
    s.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def api(stack) -> Api:
    return Api(f"http://127.0.0.1:{stack.port}", stack)


@pytest.fixture
def stack_settings(stack) -> Settings:
    return Settings.from_env(stack.env)


@contextlib.contextmanager
def private_redis_server(workdir: Path, *options: str):
    """A redis-server of its own on a free port, with ``options`` (e.g. its persistence); its URL while it runs."""
    import subprocess

    import redis as redis_lib

    from resizer.local import find_binary

    port = free_port()
    proc = subprocess.Popen([find_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--dir", str(workdir), *options], stdout=subprocess.DEVNULL)
    client = redis_lib.Redis(port=port)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis_lib.exceptions.ConnectionError:
            return False

    try:
        wait_until(answers, "the private redis-server to answer", timeout=20)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A private redis-server (for unit tests that need real Redis, e.g. RQ's Lua scripts)."""
    with private_redis_server(tmp_path_factory.mktemp("redis"), "--appendonly", "no") as url:
        yield url


@pytest.fixture
def real_redis(redis_server):
    """A clean database on the private redis-server."""
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis_server)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()  # its pool's sockets (RQ's workers in tests share them): not left for the garbage collector


class S3Server:
    """``rclone serve s3`` on a fixed port and data folder, restartable with other keys (docs/operations.md)."""

    def __init__(self, data, port: int):
        self.data, self.port, self.proc = data, port, None

    def start(self, *keys: tuple[str, str]) -> "S3Server":
        import subprocess

        from resizer.local import find_binary, port_open, wait_for

        argv = [find_binary("rclone"), "serve", "s3", str(self.data), "--addr", f"127.0.0.1:{self.port}",
                "--config", "/dev/null", "--log-level", "ERROR"]
        for key_id, secret in keys:
            argv += ["--auth-key", f"{key_id},{secret}"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open("127.0.0.1", self.port), "rclone serve s3")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
