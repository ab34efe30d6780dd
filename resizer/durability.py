"""Does Redis keep what it acknowledges?  Decides where originals wait and how a 202 is confirmed.

- With an append-only file and ``WAITAOF`` (Redis 7.2+), the API waits until the
  job is fsynced (and on a replica's disk when there are replicas) before answering.
- With an append-only file and ``appendfsync always`` (any version), Redis
  fsyncs before it replies, so an acknowledged write survives a crash.
Either way small originals may ride in Redis with their job.  Otherwise (no
persistence, ``everysec`` without WAITAOF, CONFIG refused) every original goes
to storage, and the reconciler covers what Redis loses, a Redis that comes back
empty included.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis


@dataclass(frozen=True)
class Durability:
    keeps_acknowledged: bool  # an acknowledged write (after WAITAOF, where used) survives a Redis crash
    waitaof: bool  # confirm with WAITAOF after writing
    replicas: int  # replicas WAITAOF should also wait for (0 or 1)

    def describe(self) -> str:
        if not self.keeps_acknowledged:
            return "Redis may lose acknowledged writes: originals go to storage, lost jobs are reconciled from there"
        how = "WAITAOF" + (" on a replica too" if self.replicas else "") if self.waitaof else "appendfsync always"
        return f"Redis keeps acknowledged writes ({how}): small originals ride in Redis"


NOT_DURABLE = Durability(False, False, 0)


def probe(connection: redis.Redis) -> Durability:
    try:
        persistence = connection.info("persistence")
        server = connection.info("server")
        replication = connection.info("replication")
    except redis.exceptions.RedisError:
        return NOT_DURABLE
    if not persistence.get("aof_enabled"):
        return NOT_DURABLE
    try:
        version = tuple(int(part) for part in str(server.get("redis_version", "0")).split(".")[:2])
    except ValueError:
        version = (0, 0)
    replicas = min(1, int(replication.get("connected_slaves", 0) or 0))
    if version >= (7, 2):
        return Durability(True, True, replicas)
    if replicas:
        return NOT_DURABLE  # a failover could lose what the primary fsynced, and there is no WAITAOF to wait
    try:
        fsync = connection.config_get("appendfsync").get("appendfsync")
    except redis.exceptions.RedisError:  # CONFIG is often disabled on managed Redis
        return NOT_DURABLE
    return Durability(fsync == "always", False, 0)
