"""Does Redis keep what it acknowledges?  Decides where originals wait and how a 202 is confirmed.

Redis keeps an acknowledged write through a crash only with an append-only file
and ``appendfsync always`` (it fsyncs before it replies).  Then small originals
may ride in Redis with their job; with replicas, the API also waits with
``WAITAOF`` (Redis 7.2+) until a replica has the job on disk, so a failover
cannot lose it.  Otherwise (no persistence, ``everysec``, CONFIG refused, or
replicas without WAITAOF) every original goes to storage, and the reconciler
queues again whatever Redis loses, a Redis that comes back empty included.

``appendfsync always`` costs an fsync per write batch: on a disk where that is
slow (about 3 ms on this project's CI machine), every Redis round trip of a
worker pays it; measure before choosing it.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis


@dataclass(frozen=True)
class Durability:
    keeps_acknowledged: bool  # an acknowledged write (after WAITAOF, where used) survives a Redis crash
    waitaof: bool  # confirm with WAITAOF (a replica's disk too) after writing
    replicas: int  # replicas WAITAOF waits for (0 or 1)

    def describe(self) -> str:
        if not self.keeps_acknowledged:
            return "Redis may lose acknowledged writes: originals go to storage, lost jobs are reconciled from there"
        extra = ", and WAITAOF for a replica" if self.waitaof else ""
        return f"Redis keeps acknowledged writes (appendfsync always{extra}): small originals ride in Redis"


NOT_DURABLE = Durability(False, False, 0)


def probe(connection: redis.Redis) -> Durability:
    try:
        persistence = connection.info("persistence")
        if not persistence.get("aof_enabled"):
            return NOT_DURABLE
        fsync = connection.config_get("appendfsync").get("appendfsync")
        server = connection.info("server")
        replication = connection.info("replication")
    except redis.exceptions.RedisError:  # down, or CONFIG disabled (common on managed Redis)
        return NOT_DURABLE
    if fsync != "always":
        return NOT_DURABLE  # the last second of acknowledged writes may be lost
    replicas = min(1, int(replication.get("connected_slaves", 0) or 0))
    if not replicas:
        return Durability(True, False, 0)
    try:
        version = tuple(int(part) for part in str(server.get("redis_version", "0")).split(".")[:2])
    except ValueError:
        version = (0, 0)
    # A failover promotes a replica: the job must be on its disk too, which only WAITAOF can confirm.
    return Durability(True, True, 1) if version >= (7, 2) else NOT_DURABLE
