"""Logging set-up shared by every process: readable text in development, JSON lines in production."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import datetime, timezone

from settings import Settings


# The id of the request being served (API) or of the request that created the
# job being run (worker): one upload can be followed through both logs.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", "-") != "-":
            entry["request_id"] = record.request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings, process: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)-7s {process:<6} [%(request_id)s] %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if settings.log_level.upper() != "DEBUG":
        # RQ logs every registry clean-up and every job twice; our own lines say
        # what matters (one per job, with its timings and request id).
        for chatty in ("rq.worker", "rq.scheduler", "rq.queue", "rq.job"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
