"""The Redis client factory: every process builds its clients here, once."""

from __future__ import annotations

import hiredis
import redis
from redis.backoff import ExponentialBackoff
from redis.connection import Encoder, PythonRespSerializer
from redis.retry import Retry as RedisRetry

from settings import Settings

LARGE = 6000  # bytes: an argument longer than this is sent as it is (redis-py's own cut-off)


class Joined:
    """A value that Redis receives as one string, sent from parts that are never joined in this process.

    An original waits in Redis behind a small header of its own: joining the two is a copy of the upload into
    a new multi-MB buffer, whose pages the API's allocator takes fresh from the kernel each time (a 3.8 MB
    upload: ~2.5 ms of CPU, mostly page faults, and a second copy of the upload held meanwhile)."""

    __slots__ = ("parts", "size")

    def __init__(self, *parts: bytes) -> None:
        self.parts = parts
        self.size = sum(len(part) for part in parts)

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


class CommandPacker:
    """Packs commands for redis-py: hiredis's packer when every argument is small, redis-py's own otherwise.

    Replies are parsed by hiredis (a 2.8 MB original read back: 9 ms of CPU with redis-py's Python parser, 1 ms
    with hiredis). For commands, hiredis's packer copies every argument into one buffer (a 2.8 MB SET: 7 ms of
    CPU), where redis-py's sends a large value as it is (1 ms); but redis-py's costs 1.4-6 us of Python a command
    (a job's start and ending are pipelines of a dozen or more), hiredis's 0.4-1.3. So: redis-py's for a command
    with a large value or an argument hiredis would treat otherwise (redis-py refuses bools and None, sends
    memoryviews uncopied, writes an int subclass's repr), hiredis's for the rest (str, str enums such as RQ's
    statuses, bytes, int, float), byte for byte the same (test_connections)."""

    def __init__(self) -> None:
        self._python = PythonRespSerializer(LARGE, Encoder("utf-8", "strict", False).encode)

    def pack(self, *args) -> list:
        for arg in args:
            kind = arg.__class__
            if kind is bytes or kind is str or isinstance(arg, str):  # str enums too: RQ's statuses
                if len(arg) > LARGE:
                    return self._slow(args)
            elif kind is int:
                if arg.bit_length() > 63:  # hiredis 3.5 crashes on an int whose repr Python refuses (4,300+ digits)
                    return self._slow(args)
            elif kind is not float:
                return self._slow(args)
        if len(args[0].split()) != 1:  # "CONFIG GET": redis-py splits a command name in words
            return self._slow(args)
        return [hiredis.pack_command(args)]

    def _slow(self, args: tuple) -> list:
        for arg in args:
            if arg.__class__ is Joined:
                return self._pack_joined(args)
        return self._python.pack(*args)

    def _pack_joined(self, args: tuple) -> list:
        """A command with a ``Joined`` value: large parts go out as they are, like any large argument; the small
        pieces around them are gathered into one buffer. The rest as redis-py packs it (its command name split in
        words, its arguments encoded by redis-py's encoder)."""
        head = args[0]
        if isinstance(head, str):
            args = tuple(head.encode().split()) + args[1:]
        elif b" " in head:
            args = tuple(head.split()) + args[1:]
        out, buff = [], b"*%d\r\n" % len(args)
        for arg in args:
            parts = arg.parts if arg.__class__ is Joined else (self._python.encode(arg),)
            buff += b"$%d\r\n" % sum(len(part) for part in parts)
            for part in parts:
                if len(part) > LARGE:
                    out += (buff, part)
                    buff = b""
                else:
                    buff += part
            buff += b"\r\n"
        out.append(buff)
        return out


_PACKER = CommandPacker()


def sends_joined(client) -> bool:
    """Whether ``client`` (a Redis client or pipeline) packs ``Joined`` values: one made by ``make_redis``."""
    pool = getattr(client, "connection_pool", None)
    return isinstance(getattr(pool, "connection_kwargs", {}).get("command_packer"), CommandPacker)


def make_redis(settings: Settings, *, socket_timeout: float | None = 5.0) -> redis.Redis:
    """A Redis client that fails fast when Redis is down instead of hanging a request."""
    # redis-py's default retries with up to seconds of backoff; a request should
    # rather fail in well under a second and let the client retry on 503.
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=1,
        socket_timeout=socket_timeout,
        health_check_interval=15,
        retry=RedisRetry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        command_packer=_PACKER,
    )


def claim(connection: redis.Redis, key: str, value: str, seconds: int) -> str | None:
    """Set ``key`` to ``value`` unless it holds something; what it held (None: the claim is ours)."""
    while not connection.set(key, value, nx=True, ex=seconds):
        earlier = connection.get(key)
        if earlier is not None:  # else it expired between the two calls: claim again
            return earlier.decode()
    return None


def compare_and_set(connection: redis.Redis, key: str, expected: str, value: str, seconds: int) -> bool:
    """Set ``key`` to ``value`` if it still holds ``expected`` (or nothing); False if it moved meanwhile."""
    with connection.pipeline() as pipe:
        try:
            pipe.watch(key)
            current = pipe.get(key)
            if current is not None and current.decode() != expected:
                return False
            pipe.multi()
            pipe.set(key, value, ex=seconds)
            pipe.execute()
            return True
        except redis.exceptions.WatchError:
            return False
