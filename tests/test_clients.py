"""For the people who call it: the CLI against the real service, and completion webhooks."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from rq.job import Job, JobStatus

from resizer.connections import make_redis
from resizer.security import hash_key
from resizer.webhooks import sign
from settings import Settings
from tests.conftest import CORPUS, Api, b64, image_bytes, start_stack, wait_until

pytestmark = pytest.mark.e2e
CLI = [str(Path(sys.executable).parent / "resizer")]
KEY = "cli-test-key-0123456789"
SECRET = "whsec-test-secret"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A stack with API keys and webhooks on (loopback allowed for the test receiver)."""
    stack = start_stack(tmp_path_factory.mktemp("clients"), workers=2, API_KEYS=f"cli:{hash_key(KEY)}",
                        WEBHOOK_SECRET=SECRET, WEBHOOK_ALLOWLIST="127.0.0.1",
                        ACCESS_LOG="1")  # a test counts the CLI's requests
    stack.run_supervisor()
    yield stack, Api(f"http://127.0.0.1:{stack.port}", stack)
    stack.stop()


def cli(stack, *args, key=KEY, cwd=None):
    env = {"PATH": "/usr/bin:/bin", "RESIZER_URL": f"http://127.0.0.1:{stack.port}"}
    if key:
        env["RESIZER_API_KEY"] = key
    return subprocess.run(CLI + list(args), env=env, capture_output=True, text=True, timeout=120, cwd=cwd)


# -- CLI ------------------------------------------------------------------------------------
def test_cli_submit_wait_writes_the_file(service, tmp_path):
    stack, _ = service
    out = tmp_path / "out.webp"
    r = cli(stack, "submit", str(CORPUS / "good" / "hopper.jpg"), "--width", "64", "--format", "webp", "--wait",
            "-o", str(out))
    assert r.returncode == 0, r.stderr
    with Image.open(out) as image:
        assert (image.format, image.size) == ("WEBP", (64, 64))
    assert "64x64 webp" in r.stdout


def test_cli_submit_wait_takes_one_request_when_the_job_ends_while_the_post_waits(service, tmp_path):
    """The POST waits for the job (?wait=) and answers 201 with it: no status request follows."""
    stack, _ = service

    def access() -> str:
        return "".join(f.read_text(errors="replace") for f in stack.log_dir.iterdir())

    before = access()
    r = cli(stack, "submit", str(CORPUS / "good" / "hopper.jpg"), "--width", "48", "--wait", "-o",
            str(tmp_path / "one.jpg"))
    assert r.returncode == 0, r.stderr
    after = wait_until(lambda: (lambda log: log if log.count('?wait=15.0 HTTP/1.1" 201') > before.count(
        '?wait=15.0 HTTP/1.1" 201') else None)(access()), "the POST's 201 in the access log", timeout=10)
    assert after.count('"POST /api/v1/resize') == before.count('"POST /api/v1/resize') + 1
    assert after.count('"GET /api/v1/resize/') == before.count('"GET /api/v1/resize/')
    with Image.open(tmp_path / "one.jpg") as image:
        assert image.width == 48


def test_cli_submit_wait_falls_back_to_a_long_poll_on_a_server_without_post_wait(monkeypatch, tmp_path):
    from resizer.cli import EXIT_REFUSED, Client, CliError

    calls = []

    def request(self, method, path, **kwargs):
        calls.append((method, kwargs.get("params")))
        if kwargs.get("params"):
            raise CliError("invalid_parameter: Unknown parameter 'wait'; see /api/v1/openapi.json for the accepted "
                           "ones.", EXIT_REFUSED)
        return 202, {"token": "t-1"}

    monkeypatch.setattr(Client, "_request", request)
    image = tmp_path / "a.jpg"
    image.write_bytes(image_bytes())
    assert Client("http://x", None).submit(image, {"width": 10}, wait=15) == ("t-1", None)
    assert calls == [("POST", {"wait": 15}), ("POST", None)]


def test_cli_several_files_into_a_directory(service, tmp_path):
    stack, _ = service
    files = [CORPUS / "good" / n for n in ("hopper.png", "hopper.gif", "transparent.png")]
    r = cli(stack, "submit", *map(str, files), "--width", "32", "--wait", "-o", str(tmp_path / "thumbs"))
    assert r.returncode == 0, r.stderr
    written = sorted(p.name for p in (tmp_path / "thumbs").iterdir())
    assert written == ["hopper-gif.jpg", "hopper.jpg", "transparent.jpg"]  # same stem: no overwrite
    for p in (tmp_path / "thumbs").iterdir():
        with Image.open(p) as image:
            assert image.width == 32


def test_cli_status(service):
    stack, api = service
    token = api.post({"imageData": b64(image_bytes())}, headers={"Authorization": f"Bearer {KEY}"}).json()["token"]
    r = cli(stack, "status", token, "--wait", "10")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "SUCCESS"


def test_cli_exit_codes(service, tmp_path):
    stack, _ = service
    bad = cli(stack, "submit", str(CORPUS / "bad" / "text.png"), "--wait")
    assert bad.returncode == 3 and "unsupported_image_format" in bad.stderr
    broken = cli(stack, "submit", str(CORPUS / "bad" / "truncated_jpeg.jpg"), "--wait")
    assert broken.returncode == 1 and "corrupt_image" in broken.stderr
    wrong = cli(stack, "submit", str(CORPUS / "good" / "hopper.jpg"), key="not-the-key")
    assert wrong.returncode == 4 and "unauthorized" in wrong.stderr
    missing = cli(stack, "submit", str(tmp_path / "nope.jpg"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    down = subprocess.run(CLI + ["--url", "http://127.0.0.1:9", "status", "x"], capture_output=True, text=True)
    assert down.returncode == 5 and "cannot reach" in down.stderr


# -- webhooks -------------------------------------------------------------------------------
class Receiver:
    """A local HTTP endpoint that records what it gets; it can fail the first N deliveries."""

    def __init__(self, fail_first: int = 0):
        self.calls: list[dict] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append({"headers": dict(self.headers), "body": body, "at": time.monotonic()})
                failing = len(receiver.calls) <= receiver.fail_first
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def wait_for(self, n: int, deadline: float = 30) -> list[dict]:
        wait_until(lambda: len(self.calls) >= n, f"{n} webhook call(s) (got {len(self.calls)})", deadline)
        return self.calls


def delivered(stack, token: str) -> bool:
    """The webhook's delivery job has finished: no attempt of it is left to run."""
    redis = make_redis(Settings.from_env(stack.env))
    return Job.fetch(f"webhook-{token}", connection=redis).get_status() == JobStatus.FINISHED


def submit_with_callback(api, url, image=None):
    r = api.post({"imageData": b64(image or image_bytes()), "width": 10, "callback_url": url},
                 headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 202, r.text
    return r.json()["token"]


def test_one_signed_post_per_finished_job(service):
    stack, api = service
    receiver = Receiver()
    token = submit_with_callback(api, receiver.url)
    (call,) = receiver.wait_for(1)
    headers, body = call["headers"], call["body"]
    assert headers["X-Resizer-Signature"] == sign(SECRET, headers["X-Resizer-Timestamp"], body)
    assert abs(int(headers["X-Resizer-Timestamp"]) - time.time()) < 60
    payload = json.loads(body)
    assert payload["token"] == token and payload["status"] == "SUCCESS" and payload["resized_image_url"]
    wait_until(lambda: delivered(stack, token), "the delivery job to finish")
    assert len(receiver.calls) == 1  # exactly one


def test_failed_job_is_reported_too(service):
    _, api = service
    receiver = Receiver()
    submit_with_callback(api, receiver.url, (CORPUS / "bad" / "truncated_jpeg.jpg").read_bytes())
    (call,) = receiver.wait_for(1)
    payload = json.loads(call["body"])
    assert payload["status"] == "FAILURE" and payload["error"]["code"] == "corrupt_image"


def test_a_failing_receiver_gets_it_after_retries(service):
    stack, api = service
    receiver = Receiver(fail_first=2)
    token = submit_with_callback(api, receiver.url)
    calls = receiver.wait_for(3, deadline=40)
    assert [c["body"] for c in calls[:3]] and len(calls) == 3
    assert calls[2]["at"] - calls[0]["at"] >= 5  # backoff: 1 s, then 5 s
    wait_until(lambda: delivered(stack, token), "the delivery job to finish")
    assert len(receiver.calls) == 3


@pytest.fixture(scope="module")
def no_allowlist(tmp_path_factory):
    stack = start_stack(tmp_path_factory.mktemp("noallow"), workers=1, WEBHOOK_SECRET=SECRET)
    yield Api(f"http://127.0.0.1:{stack.port}", stack)
    stack.stop()


@pytest.mark.parametrize("url", ["http://10.0.0.5/hook", "http://192.168.1.1/x", "http://169.254.169.254/latest",
                                 "http://localhost:8080/x", "http://127.0.0.1:1/x", "http://[::1]/x",
                                 "ftp://example.com/x"])
def test_private_destinations_are_refused(no_allowlist, url):
    """With the allowlist off, loopback/private/link-local callbacks are a 422 at submit."""
    r = no_allowlist.post({"imageData": b64(image_bytes()), "callback_url": url})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter"
    assert "callback_url" in r.json()["error"]["message"]
