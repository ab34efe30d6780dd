"""Deletes uploaded originals in batches, off the job's path.

A finished job no longer needs its original, but deleting it inline costs
each job one more S3 round trip (and, for a 1x1 image, a tenth of the
worker's CPU).  Jobs hand keys to the reaper instead; a background thread
deletes what has gathered with one DeleteObjects request (up to 1000 keys)
every ``interval`` seconds, and once more when the process exits.  A key
that is never deleted (the worker was SIGKILLed, storage was down) is
harmless: re-runs are idempotent, and the bucket's lifecycle rule on
``originals/`` expires strays after a day.
"""

from __future__ import annotations

import atexit
import logging
import threading

from .errors import ResizerError
from .storage import Storage

log = logging.getLogger("resizer.worker")

MAX_BATCH = 1000  # S3's limit per DeleteObjects request


class Reaper:
    def __init__(self, storage: Storage, interval: float = 1.0, background: bool = True):
        """``background=False``: no thread and no exit hook; the owner calls flush() (tests)."""
        self.storage = storage
        self.interval = interval
        self._keys: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        if background:
            threading.Thread(target=self._loop, name="reaper", daemon=True).start()
            atexit.register(self.flush)

    def add(self, key: str) -> None:
        with self._lock:
            self._keys.append(key)
            if len(self._keys) >= MAX_BATCH:
                self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._keys)

    def flush(self) -> None:
        """Delete everything handed in so far; on failure keep the keys for the next round."""
        with self._lock:
            keys, self._keys = self._keys, []
        for start in range(0, len(keys), MAX_BATCH):
            batch = keys[start:start + MAX_BATCH]
            try:
                self.storage.delete_many(batch)
            except ResizerError as exc:
                log.warning("could not delete %d original(s), will try again: %s", len(batch), exc.message)
                with self._lock:
                    self._keys[:0] = keys[start:]
                return

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never let the thread die: the next round tries again
                log.exception("deleting originals failed")
