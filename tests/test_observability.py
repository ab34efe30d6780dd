"""Metrics and logs through the real service: after a few jobs, /metrics shows them; one request id
appears in both the API's and the worker's log records."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from resizer.local import ROOT
from tests.conftest import CORPUS, Api, b64, image_bytes, start_stack, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    stack = start_stack(tmp_path_factory.mktemp("obs"), workers=1, LOG_FORMAT="json", METRICS_TOKEN="m-token",
                        ACCESS_LOG="1")
    yield stack, Api(f"http://127.0.0.1:{stack.port}", stack)
    stack.stop()


def scrape(api) -> str:
    r = api.http.get(f"{api.base}/metrics", headers={"Authorization": "Bearer m-token"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    return r.text


def value(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_need_the_token(observed):
    _, api = observed
    assert api.http.get(f"{api.base}/metrics").status_code == 401


def test_metrics_count_requests_jobs_and_stages(observed):
    _, api = observed
    before = scrape(api)
    for i in range(3):  # distinct images: identical submits would share one job's work (no stages of their own)
        assert api.wait(api.submit(image_bytes((300, 200 + i)), width=50))["status"] == "SUCCESS"
    bad = api.submit((CORPUS / "bad" / "truncated_jpeg.jpg").read_bytes())
    assert api.wait(bad)["status"] == "FAILURE"
    api.post({"imageData": "!!"})  # a 400
    after = scrape(api)
    assert value(after, "resizer_jobs_total", outcome="success", code="") - \
        value(before, "resizer_jobs_total", outcome="success", code="") == 3
    assert value(after, "resizer_jobs_total", outcome="failure", code="corrupt_image") >= 1
    assert value(after, "resizer_http_requests_total", method="POST", route="/api/v1/resize", status="202") >= 4
    assert value(after, "resizer_http_requests_total", method="POST", route="/api/v1/resize", status="400") >= 1
    assert value(after, "resizer_http_requests_total", method="GET", route="/api/v1/resize/<token>",
                 status="200") >= 4
    for stage in ("queue_wait", "download", "decode_resize", "encode", "upload"):
        assert value(after, "resizer_job_stage_seconds_count", stage=stage) >= 3, stage
    assert value(after, "resizer_workers", queue="resize") == 1
    assert "resizer_queue_depth" in after and "resizer_http_request_duration_seconds_bucket" in after


def test_one_request_id_in_api_and_worker_logs(observed):
    stack, api = observed
    rid = "trace-4242-abc"
    r = api.post({"imageData": b64(image_bytes()), "width": 20}, headers={"X-Request-ID": rid})
    assert r.headers["X-Request-ID"] == rid
    api.wait(r.json()["token"])

    def records(name):
        out = []
        for line in (stack.log_dir / f"{name}.log").read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # gunicorn's own start-up lines
        return out

    api_lines = [e for e in records("api") if e.get("request_id") == rid]
    # The worker logs the job's end just after publishing it, so a moment after the client can see it.
    worker_lines = wait_until(lambda: [e for e in records("worker-1") if e.get("request_id") == rid],
                              "the request id in the worker's log", timeout=10)
    assert api_lines, "the request id must be in both logs"
    assert any(r.json()["token"] in e["message"] for e in worker_lines)
    app_lines = [e for e in api_lines if e.get("logger") != "access"]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in app_lines + worker_lines)
    access = [e for e in api_lines if e.get("logger") == "access"]
    assert any(e["status"] == 202 and "POST /api/v1/resize" in e["request"] for e in access)



# -- scale-out ------------------------------------------------------------------------------
def _can_set_hostname() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--uts", "true"], capture_output=True).returncode == 0


def _worker_on_host(host: str, workdir, env: dict, log) -> subprocess.Popen:
    """rq_worker.py as another machine would run it: its own hostname (a UTS namespace, when we may
    make one) and its own working directory; Redis and S3 are all it shares with the rest."""
    script = str(ROOT / "rq_worker.py")
    if _can_set_hostname():
        argv = ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$0" "$@"', sys.executable, script]
    else:  # no namespaces here: the name RQ would derive from that hostname
        argv = [sys.executable, script, "--name", f"{host}.1"]
    return subprocess.Popen(argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def test_workers_on_two_hosts_share_the_queue(tmp_path):
    from rq import Worker
    from rq.job import Job

    from resizer.connections import make_redis
    from settings import Settings

    stack = start_stack(tmp_path / "stack", workers=0)  # API, Redis, S3: no resize worker of its own
    procs, logs = [], []
    try:
        env = {k: v for k, v in stack.env.items() if k != "PYTHONPATH"}  # each "host" runs from its own folder
        for host in ("host-a", "host-b"):
            (tmp_path / host).mkdir()
            logs.append(open(tmp_path / f"{host}.log", "w"))
            procs.append(_worker_on_host(host, tmp_path / host, env, logs[-1]))
        settings = Settings.from_env(stack.env)
        redis = make_redis(settings)
        wait_until(lambda: len(Worker.all(connection=redis)) >= 3, "two workers + the webhooks worker", interval=0.2)
        workers = [w for w in Worker.all(connection=redis) if settings.queue_name in w.queue_names()]
        assert sorted(w.name.split(".")[0] for w in workers) == ["host-a", "host-b"], [w.name for w in workers]
        if _can_set_hostname():  # really two hostnames, as RQ saw them
            assert sorted(w.hostname for w in workers) == ["host-a", "host-b"]

        api = Api(f"http://127.0.0.1:{stack.port}", stack)
        tokens = [api.submit(image_bytes((1600, 1200 + i)), width=64) for i in range(16)]  # distinct: no reuse
        assert all(api.wait(t)["status"] == "SUCCESS" for t in tokens)
        took = {}
        for token in tokens:
            host = Job.fetch(token, connection=redis).worker_name.split(".")[0]
            took[host] = took.get(host, 0) + 1
        print(f"\njobs taken per host: {took}")
        assert set(took) == {"host-a", "host-b"} and all(n >= 1 for n in took.values()), took
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        for log in logs:
            log.close()
        stack.stop()
