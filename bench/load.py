"""The one load client every system is measured with: CLIENTS threads, each with its own HTTP session.

Modes:
  polling    the original API's client: POST {"imageData": base64} (JSON), then GET the status every 10 ms
             until SUCCESS or FAILURE (the original and ours)
  long poll  ours only: POST the raw image, then GET ?wait=10, which returns as soon as the job ends
  one request  ours only: POST the raw image with ?wait=10, answered (201) as soon as the job ends; a 202 (its
             wait ran out, or every waiting slot was busy) goes on as the long poll
  sync       thumbor: one GET /unsafe/<size>/<file> per job, the image bytes read in full
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import requests
from tqdm import tqdm

from bench.procs import CpuMeter, per_job_ms

CLIENTS = 8
POLL_INTERVAL = 0.010
DEADLINE = 120.0


class Client:
    def __init__(self, base: str):
        self.base = base
        self.local = threading.local()

    @property
    def http(self) -> requests.Session:
        if not hasattr(self.local, "s"):
            self.local.s = requests.Session()
        return self.local.s

    def submit_and_wait(self, data: bytes, opts: dict) -> dict:
        """POST ?wait=: the job's status in the answer when it ends while the POST waits."""
        r = self._post_raw(data, {**opts, "wait": 10})
        if r.status_code == 201:
            return r.json()
        return self.long_poll(self._submitted(r))

    def _submitted(self, r: requests.Response) -> str:
        if r.status_code != 202:
            raise RuntimeError(f"POST answered {r.status_code}: {r.text[:200]}")
        return r.json()["token"]

    def _post_raw(self, data: bytes, params: dict) -> requests.Response:
        return self.http.post(f"{self.base}/api/v1/resize", data=data, params=params,
                              headers={"Content-Type": "image/jpeg"}, timeout=60)

    def post_raw(self, data: bytes, opts: dict) -> tuple[str, float]:
        t = time.perf_counter()
        r = self._post_raw(data, opts)
        return self._submitted(r), time.perf_counter() - t

    def post_json(self, body: bytes) -> tuple[str, float]:
        """``body``: the JSON document, encoded once by the caller (a client would not re-encode per request)."""
        t = time.perf_counter()
        r = self.http.post(f"{self.base}/api/v1/resize", data=body, headers={"Content-Type": "application/json"},
                           timeout=60)
        return self._submitted(r), time.perf_counter() - t

    def status(self, token: str, wait: float | None = None) -> dict:
        r = self.http.get(f"{self.base}/api/v1/resize/{token}", params={"wait": wait} if wait else None, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"GET status answered {r.status_code}: {r.text[:200]}")
        return r.json()

    def poll(self, token: str) -> dict:
        """The seed-compatible client: a plain GET every 10 ms."""
        end = time.perf_counter() + DEADLINE
        while time.perf_counter() < end:
            body = self.status(token)
            if body["status"] in ("SUCCESS", "FAILURE"):
                return body
            time.sleep(POLL_INTERVAL)
        raise RuntimeError(f"job {token} did not finish in {DEADLINE:.0f} s")

    def long_poll(self, token: str) -> dict:
        end = time.perf_counter() + DEADLINE
        while time.perf_counter() < end:
            body = self.status(token, wait=10)
            if body["status"] in ("SUCCESS", "FAILURE"):
                return body
            time.sleep(0.05)  # answered without waiting (all its waiting slots busy)
        raise RuntimeError(f"job {token} did not finish in {DEADLINE:.0f} s")

    def fetch(self, path: str) -> bytes:
        r = self.http.get(f"{self.base}{path}", timeout=60)
        if r.status_code != 200 or not r.content:
            raise RuntimeError(f"GET {path} answered {r.status_code}: {r.text[:200]}")
        return r.content


@dataclass(frozen=True)
class Workload:
    key: str  # the name on the command line
    label: str
    image: str  # file name under the image folder
    target: str  # "100x100" or "1024 wide"


WORKLOADS = [Workload("png1", "1×1 PNG → 100×100", "png1.png", "100x100"),
             Workload("12mp-100", "12 MP JPEG → 100×100", "12mp.jpg", "100x100"),
             Workload("12mp-1024", "12 MP JPEG → 1024 wide", "12mp.jpg", "1024 wide"),
             Workload("2.8mp-100", "2.8 MP JPEG → 100×100", "2.8mp.jpg", "100x100")]


def job_for(system: str, mode: str, client: Client, workload: Workload, data: bytes) -> Callable[[], bool] | None:
    """One job of ``workload`` on ``system`` in ``mode``; None where that system cannot do it."""
    small = workload.target == "100x100"
    if system == "thumbor":
        path = f"/unsafe/{'100x100' if small else '1024x0'}/{workload.image}"
        return lambda: bool(client.fetch(path))
    if mode == "polling":
        if system.startswith("original") and not small:
            return None  # the original made 100x100 only
        # No size: the original's (and our compatible default) 100x100, stretched.
        unique = unique_json(data, {} if small else {"width": 1024})
        return lambda: client.poll(client.post_json(unique())[0])["status"] == "SUCCESS"
    if system != "ours":
        return None
    # Ours' raw uploads. cover: exactly 100x100 without distortion, as thumbor's /100x100/ answers
    opts = {"width": 100, "height": 100, "fit": "cover"} if small else {"width": 1024}
    if mode == "long poll":
        return lambda: client.long_poll(client.post_raw(data + os.urandom(UNIQUE), opts)[0])["status"] == "SUCCESS"
    if mode == "one request":
        return lambda: client.submit_and_wait(data + os.urandom(UNIQUE), opts)["status"] == "SUCCESS"
    return None


# Every upload is made unique by random bytes after the image's end marker (decoders ignore them),
# so ours never reuses identical work in the benchmark: what is measured is real processing.
UNIQUE = 12  # a multiple of 3: the base64 of the image's head stays aligned


def unique_json(data: bytes, options: dict) -> Callable[[], bytes]:
    """A maker of JSON bodies for ``data`` + random tail; the head's base64 is encoded once."""
    cut = len(data) // 3 * 3
    head = b'{"imageData": "' + base64.b64encode(data[:cut])
    rest = data[cut:]
    tail = b'"' + (b", " + json.dumps(options)[1:-1].encode() if options else b"") + b"}"
    return lambda: head + base64.b64encode(rest + os.urandom(UNIQUE)) + tail


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def run_load(job: Callable[[], bool], roles: Callable[[], dict[str, list[int]]], desc: str, jobs: int | None,
             seconds: float | None) -> dict:
    """CLIENTS threads run ``job`` back to back; what is measured is a window of steady load.

    The window opens when the first CLIENTS jobs (the warm-up) have ended and closes when ``jobs`` more
    have ended or ``seconds`` have passed, whichever comes first.  jobs/s is the jobs that ended inside
    it over its length, and CPU per role is read from /proc over it (bench.procs.CpuMeter), so neither the
    ramp-up nor the tail of the last jobs in flight skews a slow system's figures.
    """
    lock = threading.Lock()
    limit = jobs if jobs is not None else 10**9
    window: dict = {"opened": None, "closed": None, "cpu": None}
    meter = CpuMeter(roles)
    latencies: list[float] = []
    errors: list[str] = []
    state = {"ended": 0, "failures": 0}
    bar = tqdm(total=jobs, desc=desc, leave=False, unit="job")

    def ended(latency: float, ok: bool) -> None:
        now = time.perf_counter()
        with lock:
            state["ended"] += 1
            if window["opened"] is None:
                if state["ended"] >= CLIENTS:
                    meter.open()
                    window["opened"] = now
                return
            if window["closed"] is not None:
                return
            latencies.append(latency)
            state["failures"] += not ok
            bar.update()
            if len(latencies) >= limit or (seconds and now - window["opened"] >= seconds):
                window["closed"], window["cpu"] = now, meter.close()

    def client_loop() -> None:
        while window["closed"] is None:
            t = time.perf_counter()
            try:
                ok = job()
            except Exception as exc:  # a failed job is a result to report, not a reason to stop the run
                ok = False
                errors.append(str(exc)[:200])
            ended(time.perf_counter() - t, ok)

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        while th.is_alive():
            th.join(0.2)  # with a timeout, so Ctrl-C is not held up until every job has ended
    bar.close()
    length = window["closed"] - window["opened"]
    done, failures = len(latencies), state["failures"]
    return {"jobs": done, "seconds": length, "jobs_per_s": (done - failures) / length, "failures": failures,
            "errors": sorted(set(errors))[:3], "p50_ms": pct(latencies, 50) * 1000,
            "p95_ms": pct(latencies, 95) * 1000, "p99_ms": pct(latencies, 99) * 1000,
            "cpu_ms_per_job": per_job_ms(window["cpu"], done)}


def await_endings(get: Callable[[str], requests.Response], tokens: list[str], seconds: float,
                  desc: str) -> tuple[dict[str, str], dict[str, str]]:
    """Poll every token until it ends: ({token: SUCCESS|FAILURE}, {token: "404" | "never ended"}).

    ``get(token)`` answers the token's status.  Each sweep goes in submission order and stops at the first
    job still running (a queue is roughly first in, first out), so waiting does not itself load the
    service; an answer that is not a status (a 503, a dropped connection) counts as still running.
    """
    ended: dict[str, str] = {}
    lost: dict[str, str] = {}
    pending = list(tokens)
    deadline = time.monotonic() + seconds
    with tqdm(total=len(tokens), desc=desc, leave=False, unit="job") as bar:
        while pending and time.monotonic() < deadline:
            still: list[str] = []
            for i, token in enumerate(pending):
                try:
                    r = get(token)
                    status = r.json().get("status") if r.status_code == 200 else None
                except (requests.RequestException, ValueError):
                    r, status = None, None
                if r is not None and r.status_code == 404:
                    lost[token] = "404"
                elif status in ("SUCCESS", "FAILURE"):
                    ended[token] = status
                else:
                    still = pending[i:]
                    break
                bar.update()
            if len(still) == len(pending):
                time.sleep(0.5)
            pending = still
    lost.update({token: "never ended" for token in pending})
    return ended, lost
