"""The RQ worker class: no fork per job, and a heartbeat that proves liveness during long jobs.

RQ's default ``Worker`` forks a work horse per job (~8 ms each, here); our jobs
hold no state between runs, so ``SimpleWorker`` runs them in-process and the
boto3/Redis clients and Pillow's plugins are set up once.  ``SimpleWorker`` has
no monitoring loop, though, so on its own it reserves a job for the whole job
timeout + 60 s: a killed worker's job would sit for minutes before anyone
noticed.  Here a small thread renews the reservation every
``heartbeat_interval`` seconds and the reservation is only ``dead_after``
seconds long, so another worker's maintenance pass re-queues a dead worker's
job (through its ``Retry``) within about ``dead_after + maintenance_interval``.
Job time limits are still enforced by RQ's SIGALRM death penalty.
"""

from __future__ import annotations

import logging
import threading

from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker

log = logging.getLogger("resizer.worker")


class ResizeWorker(SimpleWorker):
    heartbeat_interval: int = 5
    dead_after: int = 20

    def get_heartbeat_ttl(self, job: Job) -> int:
        return self.dead_after

    def execute_job(self, job: Job, queue: Queue) -> None:
        done = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, done), name="heartbeat", daemon=True)
        beat.start()
        try:
            super().execute_job(job, queue)
        finally:
            done.set()
            beat.join(timeout=self.heartbeat_interval + 5)

    def _beat(self, job: Job, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_interval):
            if self.execution is None:
                continue
            try:
                self.maintain_heartbeats(job)
            except Exception as exc:  # Redis blip: the next beat tries again
                log.warning("heartbeat for job %s failed: %s", job.id, exc)
