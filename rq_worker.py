"""Worker entry point: ``python rq_worker.py`` runs one RQ worker on the configured queue.

Run several for parallelism (``make run`` starts WORKERS of them and restarts
any that dies; docker-compose scales the ``worker`` service).  SIGTERM is a
warm shutdown: the current job finishes, then the process exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--name", default=None, help="worker name (default: host.pid)")
    parser.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    parser.add_argument("--queue", choices=["resize", "webhooks"], default="resize",
                        help="resize jobs (default) or completion-webhook deliveries")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"rq_worker: configuration error: {exc}", file=sys.stderr)
        return 2

    from resizer import webhooks
    from resizer.worker import ResizeWorker, check_memory_limit, context
    from resizer.connections import make_redis
    from resizer.logs import configure_logging

    configure_logging(settings, "worker")
    context()  # build storage clients and load Pillow now, not in the first job
    if args.queue == "resize":  # the jobs' module and what it imports (~80 ms, more under load), not in the first job
        import resizer.tasks  # noqa: F401
    connection = make_redis(settings, socket_timeout=None)
    ResizeWorker.heartbeat_interval = settings.worker_heartbeat_interval
    ResizeWorker.dead_after = settings.worker_dead_after
    ResizeWorker.reconciles = args.queue == "resize"
    ResizeWorker.max_rss = settings.worker_max_rss_mb << 20
    check_memory_limit(ResizeWorker.max_rss)  # after context(): what a worker holds before its first job
    queue = settings.queue_name if args.queue == "resize" else webhooks.queue_name(settings)
    worker = ResizeWorker(
        [queue],
        connection=connection,
        name=args.name or f"{socket.gethostname()}.{os.getpid()}",
        worker_ttl=settings.maintenance_interval + 15,  # bounds the idle wait, so maintenance runs on time
        maintenance_interval=settings.maintenance_interval,
        job_monitoring_interval=settings.worker_heartbeat_interval,
    )
    logging.getLogger("resizer.worker").info(
        "worker %s listening on queue %r (redis %s)", worker.name, queue, settings.redis_url.split("@")[-1]
    )
    # Exits after a job that leaves it above WORKER_MAX_RSS_MB, or after WORKER_MAX_JOBS jobs (0: never);
    # `make run` and compose's restart policy start a fresh one.
    max_jobs = args.max_jobs or settings.worker_max_jobs or None
    worker.work(burst=args.burst, with_scheduler=True, max_jobs=max_jobs, logging_level=settings.log_level.upper())
    return 0


if __name__ == "__main__":
    sys.exit(main())
