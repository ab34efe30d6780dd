"""The stack's floor: what a job costs on this machine with nothing in it but RQ and two HTTP requests.

Issue 14 states its goals as ratios of jobs/s. A job of a service that runs each image as one RQ job behind
Flask (the design this service is built to) costs at least: the kernel, the transport of the upload and of
the status answer through gunicorn and Flask with the benchmark's own client, and an RQ job (its enqueue, a
worker running it, Redis serving both). Measured in the same run with nothing else in them, their sum gives a
ceiling estimate for each goal (``report.bound``): the jobs/s such a service could reach here with every core
busy. It is an estimate, not a proof: the worker is stock RQ (``SimpleWorker``; ours trims some of its
bookkeeping), the kernel is ours (another imaging library could be faster), and one RQ job per image behind
two requests is the design, not a law.

- ``rq_floor``: an enqueue, RQ's SimpleWorker running a job that does nothing, and Redis (no persistence)
  serving both; the jobs keep their result as ours do (RQ deletes a job kept for 0 s with extra round trips).
- ``transport_floor``: gunicorn configured as the API's, with a Flask app that reads each upload in full and
  answers at once (202 and a token; the status SUCCESS), driven by the benchmark's client in each mode: the
  server's and the client's CPU a job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.load import Client, Workload, job_for, run_load
from bench.peers import HEARTBEAT_IN_MEMORY, start_redis
from bench.procs import Group, _run_seconds
from resizer.local import BIN, free_port, port_open, wait_for

ROOT = Path(__file__).resolve().parent.parent
# The API's server as gunicorn.conf.py runs it: two processes of eight threads.
GUNICORN = ["-w", "2", "--threads", "8", "-k", "gthread", "--keep-alive", "5", *HEARTBEAT_IN_MEMORY]
RESULT_TTL = 500  # seconds: the floor's jobs keep their result, as ours do (settings.RESULT_TTL)

_WORKER = r"""
import json, resource, sys
from redis import Redis
from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry, FinishedJobRegistry
redis = Redis.from_url(sys.argv[1])
queue = Queue("floor", connection=redis)
worker = SimpleWorker([queue], connection=redis)
import bench.floor  # noqa: E402,F401  (the jobs' module: imported before the measurement, not by the first job)
before = resource.getrusage(resource.RUSAGE_SELF)
worker.work(burst=True, logging_level="WARNING", with_scheduler=False)
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu_s": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
                  "succeeded": FinishedJobRegistry(queue=queue).count, "failed": FailedJobRegistry(queue=queue).count,
                  "left": queue.count}))
"""


def noop() -> None:
    """The floor's job: nothing."""


def floor_app():
    """The floor's API: the service's two routes, answering at once. An upload is read in full (any service
    must), nothing else is done with it."""
    from flask import Flask, jsonify, request

    app = Flask("floor")

    @app.post("/api/v1/resize")
    def submit():
        request.get_data(cache=False)
        token = str(uuid.uuid4())
        if "wait" in request.args:  # POST ?wait=: answered with the job's end
            return jsonify(token=token, status="SUCCESS"), 201
        return jsonify(token=token, status="PENDING"), 202

    @app.get("/api/v1/resize/<token>")
    def status(token: str):
        return jsonify(token=token, status="SUCCESS")

    return app


def rq_floor(workdir: Path, jobs: int, func=noop) -> dict:
    """ms of CPU a job: the enqueue (in this thread), RQ's SimpleWorker running it, and Redis for both.
    Every job must succeed (a failed job costs more than one that did nothing: it would inflate the floor)."""
    from redis import Redis
    from rq import Queue

    group = Group(workdir / "logs")
    connection = None
    try:
        redis_pid, redis_url = start_redis(group, workdir, appendonly=False)
        connection = Redis.from_url(redis_url)
        queue = Queue("floor", connection=connection)
        queue.enqueue(func, result_ttl=RESULT_TTL)  # imports and connections paid before the measurement
        redis0 = _run_seconds(redis_pid) or 0.0
        started = time.thread_time()
        for _ in range(jobs):
            queue.enqueue(func, result_ttl=RESULT_TTL)
        enqueue_s = time.thread_time() - started
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        run = subprocess.run([sys.executable, "-c", _WORKER, redis_url], capture_output=True, text=True, env=env,
                             cwd=ROOT, timeout=600)
        if run.returncode != 0:
            raise RuntimeError(f"the floor's RQ worker failed: {run.stderr[-2000:]}")
        worker = json.loads(run.stdout.strip().splitlines()[-1])
        if worker["succeeded"] != jobs + 1 or worker["failed"] or worker["left"]:
            raise RuntimeError(f"the floor's RQ worker ran {worker['succeeded']} of {jobs + 1} jobs"
                               f" ({worker['failed']} failed, {worker['left']} left): {run.stderr[-2000:]}")
        redis_s = (_run_seconds(redis_pid) or 0.0) - redis0
    finally:
        if connection is not None:
            connection.close()
        group.stop_all()
    out = {"jobs": jobs, "succeeded": worker["succeeded"], "enqueue_ms": enqueue_s * 1000 / jobs,
           "worker_ms": worker["cpu_s"] * 1000 / (jobs + 1),  # it ran the warm-up job too
           "redis_ms": redis_s * 1000 / jobs}
    out["job_ms"] = out["enqueue_ms"] + out["worker_ms"] + out["redis_ms"]
    return out


def transport_floor(workdir: Path, cases: list[tuple[Workload, str, bytes]], seconds: float,
                    jobs: int | None = None) -> dict[str, dict]:
    """For each (workload, mode, image): the server's and the client's ms of CPU a job, keyed "workload|mode"."""
    group = Group(workdir / "logs")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    out: dict[str, dict] = {}
    try:
        # Not run from the checkout: gunicorn would read its ./gunicorn.conf.py (the API's hooks and metrics folder).
        server = group.spawn("floor-api", [str(BIN / "gunicorn"), *GUNICORN, "-b", f"127.0.0.1:{port}",
                                           "bench.floor:floor_app()"], {**os.environ, "PYTHONPATH": str(ROOT)},
                             cwd=workdir)
        wait_for(lambda: port_open("127.0.0.1", port) or server.poll() is not None, "the floor's gunicorn", timeout=60)
        if server.poll() is not None:
            raise RuntimeError(f"the floor's gunicorn exited ({server.returncode}): see {workdir / 'logs'}")
        client = Client(f"http://127.0.0.1:{port}")
        for workload, mode, data in cases:  # ours' modes: job_for gives each a job
            job = job_for("ours", mode, client, workload, data)
            # The load's first jobs (one a client) are its warm-up: both server processes have loaded the app.
            row = run_load(job, lambda: {"api": [server.pid]}, f"floor: {workload.key} {mode}", jobs, seconds)
            if row["failures"]:
                raise RuntimeError(f"the floor's server failed {row['failures']} jobs: {row['errors']}")
            cpu = row["cpu_ms_per_job"]
            out[f"{workload.key}|{mode}"] = {"jobs": row["jobs"], "jobs_per_s": row["jobs_per_s"],
                                             "api_ms": cpu["api"], "client_ms": cpu["client"]}
    finally:
        group.stop_all()
    return out


def stack_floor(workdir: Path, cases: list[tuple[Workload, str, bytes]], jobs: int, seconds: float,
                transport_jobs: int | None = None) -> dict:
    return {"rq": rq_floor(workdir / "rq", jobs),
            "transport": transport_floor(workdir / "api", cases, seconds, transport_jobs)}
