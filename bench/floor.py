"""The stack's floor: what an RQ job and a Flask request cost on this machine with nothing in them.

Issue 14 states its goals as ratios of jobs/s. Whatever a service built on RQ and Flask does, a job
of it costs at least an enqueue, an RQ job run by a worker (and Redis serving both) and two HTTP
requests through gunicorn and Flask (the submit and one status answer), on top of the kernel and the
client's own CPU. Measured in the same run with nothing in them (a job that does nothing, a route that
returns a constant), they bound the ratio any such service could reach here: ``report.bound``.

Every figure is a lower bound of what ours must spend: the floor's Redis keeps nothing on disk, its
worker is RQ's cheapest (``SimpleWorker``, no fork), its jobs keep no result, and its requests are GETs
of a few bytes.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.procs import Group, _run_seconds, descendants
from resizer.local import BIN, free_port, port_open, wait_for

ROOT = Path(__file__).resolve().parent.parent
CLIENT_THREADS = 8
# The API's server as gunicorn.conf.py runs it: two processes of eight threads.
GUNICORN = ["-w", "2", "--threads", "8", "-k", "gthread", "--keep-alive", "5"]
REQUESTS_PER_JOB = 2  # the submit, and at least one status answer (polling or long poll)

_WORKER = r"""
import json, resource, sys
from redis import Redis
from rq import Queue, SimpleWorker
redis = Redis(port=int(sys.argv[1]))
worker = SimpleWorker([Queue("floor", connection=redis)], connection=redis)
before = resource.getrusage(resource.RUSAGE_SELF)
worker.work(burst=True, logging_level="WARNING", with_scheduler=False)
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu_s": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
                  "left": Queue("floor", connection=redis).count}))
"""


def noop() -> None:
    """The floor's job: nothing."""


def hello_app():
    """The floor's API: one route that answers a constant, as small as a status answer."""
    from flask import Flask, jsonify

    app = Flask("floor")

    @app.get("/status")
    def status():
        return jsonify(status="PENDING", token="0" * 32)

    return app


def rq_floor(workdir: Path, jobs: int) -> dict:
    """ms of CPU a job: the enqueue (in the caller), RQ's SimpleWorker running it, and Redis for both."""
    from redis import Redis
    from rq import Queue

    group = Group(workdir / "logs")
    port = free_port()
    data = workdir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    connection = Redis(port=port)
    try:
        group.spawn("floor-redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                                    "--appendonly", "no", "--save", ""], dict(os.environ))
        wait_for(lambda: port_open("127.0.0.1", port), "the floor's redis-server")
        redis_pid = group.pid("floor-redis")
        queue = Queue("floor", connection=connection)
        queue.enqueue(noop, result_ttl=0)  # imports and connections paid before the measurement
        redis0 = _run_seconds(redis_pid) or 0.0
        started = time.thread_time()
        for _ in range(jobs):
            queue.enqueue(noop, result_ttl=0)
        enqueue_s = time.thread_time() - started
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        run = subprocess.run([sys.executable, "-c", _WORKER, str(port)], capture_output=True, text=True, env=env,
                             cwd=ROOT, timeout=600)
        if run.returncode != 0:
            raise RuntimeError(f"the floor's RQ worker failed: {run.stderr[-2000:]}")
        worker = json.loads(run.stdout.strip().splitlines()[-1])
        if worker["left"]:
            raise RuntimeError(f"the floor's RQ worker left {worker['left']} of {jobs + 1} jobs queued")
        redis_s = (_run_seconds(redis_pid) or 0.0) - redis0
    finally:
        connection.close()
        group.stop_all()
    per_job = 1000 / (jobs + 1)  # the worker ran the warm-up job too
    return {"jobs": jobs, "enqueue_ms": enqueue_s * 1000 / jobs, "worker_ms": worker["cpu_s"] * per_job,
            "redis_ms": redis_s * per_job}


def request_floor(workdir: Path, seconds: float) -> dict:
    """ms of the server's CPU a request: gunicorn (configured as the API's) and Flask answering a constant."""
    group = Group(workdir / "logs")
    port = free_port()
    try:
        server = group.spawn("floor-api", [str(BIN / "gunicorn"), *GUNICORN, "-b", f"127.0.0.1:{port}",
                                           "bench.floor:hello_app()"], {**os.environ, "PYTHONPATH": str(ROOT)},
                             cwd=ROOT)
        wait_for(lambda: _answers(port), "the floor's gunicorn", timeout=60)
        counts = [0] * CLIENT_THREADS
        end = time.monotonic() + seconds

        def client(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            while time.monotonic() < end:
                conn.request("GET", "/status")
                conn.getresponse().read()
                counts[i] += 1
            conn.close()

        cpu0 = _tree_seconds(server.pid)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENT_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cpu = _tree_seconds(server.pid) - cpu0
    finally:
        group.stop_all()
    requests = sum(counts)
    return {"requests": requests, "request_ms": cpu * 1000 / max(requests, 1)}


def stack_floor(workdir: Path, jobs: int, seconds: float) -> dict:
    out = {**rq_floor(workdir / "rq", jobs), **request_floor(workdir / "api", seconds)}
    out["job_ms"] = out["enqueue_ms"] + out["worker_ms"] + out["redis_ms"] + REQUESTS_PER_JOB * out["request_ms"]
    return out


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/status")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _tree_seconds(pid: int) -> float:
    return sum(_run_seconds(p) or 0.0 for p in descendants(pid))
