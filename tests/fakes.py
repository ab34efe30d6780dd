"""Fakes for unit tests of worker-side code: storage in memory, an RQ job without RQ."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from resizer.errors import StorageUnavailable


class FakeStorage:
    """The Storage interface over a dict; ``down = True`` makes every call fail as an outage does."""

    def __init__(self):
        self.objects: dict[str, tuple[bytes, str, dict]] = {}
        self.modified: dict[str, datetime] = {}
        self.down = False
        self.calls: list[tuple[str, str]] = []

    def _check(self, op: str, key: str) -> None:
        self.calls.append((op, key))
        if self.down:
            raise StorageUnavailable("Object storage is unreachable (fake outage).")

    def put(self, key, data, content_type, cache_control=None, metadata=None):
        self._check("put", key)
        if hasattr(data, "read"):  # a file-like body, as boto3 takes
            data = data.read()
        self.objects[key] = (bytes(data), content_type, {k.lower(): v for k, v in (metadata or {}).items()})
        self.modified[key] = datetime.now(timezone.utc)

    def get(self, key):
        self._check("get", key)
        item = self.objects.get(key)
        return item[0] if item else None

    def head(self, key):
        self._check("head", key)
        item = self.objects.get(key)
        if item is None:
            return None
        return {"metadata": dict(item[2]), "last_modified": self.modified[key], "bytes": len(item[0])}

    def get_head_bytes(self, key, length):
        data = self.get(key)
        return None if data is None else data[:length]

    def exists(self, key):
        self._check("head", key)
        return key in self.objects

    def delete(self, key):
        self._check("delete", key)
        self.objects.pop(key, None)

    def delete_many(self, keys):
        self._check("delete_many", ",".join(keys))
        for key in keys:
            self.objects.pop(key, None)

    def list(self, prefix):
        self._check("list", prefix)
        return [(k, self.modified[k]) for k in sorted(self.objects) if k.startswith(prefix)]

    def presigned_url(self, key, ttl):
        return f"https://storage.test/{key}?expires={ttl}"


def fake_job(connection, token: str, tenant: str, spec: dict, *, retries_left: int | None = 2):
    """What the job code reads of RQ's Job."""
    now = datetime.now(timezone.utc)
    job = SimpleNamespace(id=token, connection=connection, retries_left=retries_left, meta={},
                          created_at=now, enqueued_at=now, started_at=now, args=(token, tenant, spec, None))
    job.saved_meta = []
    job.save_meta = lambda: job.saved_meta.append(dict(job.meta))
    return job
