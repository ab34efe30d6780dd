"""Prometheus metrics: HTTP requests from the API processes, jobs and stage timings from the workers.

The API's request metrics use prometheus-client's multiprocess mode (one file
per gunicorn worker under PROMETHEUS_MULTIPROC_DIR).  Workers run on any
number of hosts, so they do not serve metrics themselves: each job adds its
outcome and stage timings to a few Redis hashes in one round trip, and
``GET /metrics`` on any API process reports them together with the queue depth
and the number of live workers.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Iterable

import redis
from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from rq import Queue, Worker

from settings import Settings

from .errors import NotFound, Unauthorized

PREFIX = "resizer:metrics:"
# + stage name: a hash of per-bucket counts and the sum (an older worker's may also hold a "count", read by nothing)
STAGE_KEY = PREFIX + "stage_hist:"
STAGES = ("queue_wait", "download", "decode_resize", "encode", "upload")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter("resizer_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"])
LATENCY = Histogram("resizer_http_request_duration_seconds", "HTTP request latency by route", ["method", "route"],
                    buckets=BUCKETS)


# -- worker side ---------------------------------------------------------------------------
def record_job(connection: redis.Redis, outcome: str, code: str, stages: dict[str, float]) -> None:
    """Count one finished job and its stage timings (seconds), in one round trip.

    Each timing increments only the one bucket it falls in (not every bucket
    above it, as Prometheus reports them) and the sum: two commands a stage
    instead of up to fifteen.  ``JobCollector`` makes the counts cumulative when
    scraped and takes a stage's count as the total of its buckets, so no count
    is stored.  The release before this one (1a61eee) scrapes the same way, so
    the two can run side by side (a rolling upgrade, a rollback).  Releases
    older than that read the "count" field this one no longer writes: beside
    them, their scrape's +Inf and _count stop growing while the buckets below
    do, which makes those histograms invalid (quantiles are wrong) until they
    are gone; jobs themselves are unaffected (docs/operations.md).
    """
    pipe = connection if isinstance(connection, redis.client.Pipeline) else connection.pipeline(transaction=False)
    pipe.hincrby(PREFIX + "jobs", f"{outcome}|{code}", 1)
    for stage, seconds in stages.items():
        key = STAGE_KEY + stage
        pipe.hincrby(key, str(next((b for b in BUCKETS if seconds <= b), "+Inf")), 1)
        pipe.hincrbyfloat(key, "sum", seconds)
    if pipe is not connection:  # a caller's pipeline is executed by the caller
        pipe.execute()


def stage_count(connection: redis.Redis, stage: str) -> int:
    """How many timings of ``stage`` the workers recorded (the total of its buckets)."""
    counts = connection.hmget(STAGE_KEY + stage, [str(b) for b in BUCKETS] + ["+Inf"])
    return sum(int(c) for c in counts if c is not None)


# -- API side ----------------------------------------------------------------------------------
class JobCollector:
    """Reads what the workers recorded, plus RQ's queue depth and live workers."""

    def __init__(self, connection: redis.Redis, queue_name: str):
        self.redis = connection
        self.queue = Queue(queue_name, connection=connection)

    def collect(self) -> Iterable:
        jobs = CounterMetricFamily("resizer_jobs", "Finished jobs by outcome and error code", labels=["outcome", "code"])
        for field, value in self.redis.hgetall(PREFIX + "jobs").items():
            outcome, _, code = field.decode().partition("|")
            jobs.add_metric([outcome, code], float(value))
        yield jobs
        stages = HistogramMetricFamily("resizer_job_stage_seconds", "Time spent in each stage of a job",
                                       labels=["stage"])
        for stage in STAGES:
            raw = {k.decode(): float(v) for k, v in self.redis.hgetall(STAGE_KEY + stage).items()}
            if not raw:
                continue
            buckets, below = [], 0.0
            for bound in BUCKETS:  # stored per bucket; Prometheus buckets count everything at or below
                below += raw.get(str(bound), 0.0)
                buckets.append((str(bound), below))
            buckets.append(("+Inf", below + raw.get("+Inf", 0.0)))
            stages.add_metric([stage], buckets, raw.get("sum", 0.0))
        yield stages
        depth = GaugeMetricFamily("resizer_queue_depth", "Jobs waiting in the queue", labels=["queue"])
        depth.add_metric([self.queue.name], self.queue.count)
        yield depth
        started = GaugeMetricFamily("resizer_jobs_in_progress", "Jobs being processed now", labels=["queue"])
        started.add_metric([self.queue.name], self.queue.started_job_registry.count)
        yield started
        workers = GaugeMetricFamily("resizer_workers", "Live RQ workers on the queue", labels=["queue"])
        workers.add_metric([self.queue.name], Worker.count(queue=self.queue))
        yield workers


def register_metrics(app: Flask, settings: Settings, connection: redis.Redis) -> None:
    multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        if route != "/metrics":
            REQUESTS.labels(request.method, route, str(response.status_code)).inc()
            # A POST ?wait= is timed up to its acceptance: the wait for its job is the job's time, not the API's.
            ended = g.get("wait_started") or time.perf_counter()
            LATENCY.labels(request.method, route).observe(ended - g.get("started", ended))
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        if settings.metrics_token:
            header = request.headers.get("Authorization", "")
            if not hmac.compare_digest(header.encode(), f"Bearer {settings.metrics_token}".encode()):
                raise Unauthorized("Send the metrics token as 'Authorization: Bearer <METRICS_TOKEN>'.")
        elif settings.app_env == "production":
            raise NotFound("Metrics are off: set METRICS_TOKEN to enable /metrics.")
        registry = CollectorRegistry()
        if multiproc:
            multiprocess.MultiProcessCollector(registry)
        else:  # one process (tests, flask run): the module's own metrics
            registry.register(REQUESTS)
            registry.register(LATENCY)
        registry.register(JobCollector(connection, settings.queue_name))
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
