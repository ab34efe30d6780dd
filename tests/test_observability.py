"""Metrics and logs through the real service: after a few jobs, /metrics shows them; one request id
appears in both the API's and the worker's log records."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import CORPUS, Api, b64, image_bytes, start_stack

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
    for _ in range(3):
        assert api.wait(api.submit(image_bytes((300, 200)), width=50))["status"] == "SUCCESS"
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
    worker_lines = [e for e in records("worker-1") if e.get("request_id") == rid]
    assert api_lines and worker_lines, "the request id must be in both logs"
    assert any(r.json()["token"] in e["message"] for e in worker_lines)
    app_lines = [e for e in api_lines if e.get("logger") != "access"]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in app_lines + worker_lines)
    access = [e for e in api_lines if e.get("logger") == "access"]
    assert any(e["status"] == 202 and "POST /api/v1/resize" in e["request"] for e in access)

