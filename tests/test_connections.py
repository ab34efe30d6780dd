"""How every process talks to Redis."""

import enum

import pytest
from redis.exceptions import DataError
from rq.job import JobStatus

from settings import Settings


def test_redis_replies_are_parsed_by_hiredis_and_large_values_are_sent_uncopied():
    """hiredis parses a 2.8 MB reply in ~1 ms where redis-py's parser takes ~9; its packer, though, copies every
    argument into one buffer (a 2.8 MB SET: 7 ms), so a command with a large value is packed by redis-py's."""
    from redis._parsers import _HiredisParser

    from resizer.connections import make_redis

    client = make_redis(Settings.from_env({"APP_ENV": "testing", "REDIS_URL": "redis://127.0.0.1:6379/15"}))
    connection = client.connection_pool.make_connection()
    assert isinstance(connection._parser, _HiredisParser)
    value = b"v" * 100_000
    assert any(part is value for part in connection._command_packer.pack("SET", "k", value))


class Level(enum.IntEnum):
    HIGH = 3


def _joined(chunks) -> bytes:
    return b"".join(bytes(chunk) for chunk in chunks)


COMMANDS = [
    ("GET", "resizer:original:abc"),
    ("HSET", "rq:job:0f3e2a1b", "status", "started", "started_at", "2026-11-30T07:40:00.123456Z", "n", 3),
    ("ZADD", b"rq:wip:default", 1764488400.25, "0f3e2a1b"),
    ("EXPIRE", "rq:worker:w1", 480),
    ("SET", "k", "é", "EX", 2**40),
    ("SET", "k", b"\x00\xff\r\n" * 1500),  # 6,000 bytes: still small
    ("SET", "k", -0.0),
    ("HSET", "rq:job:1", "status", JobStatus.STARTED),  # a str enum
    ("CONFIG GET", "appendfsync"),  # a command name with a space: split in two
    (b"CLIENT SETNAME", b"worker"),
    ("SET", "k", b"v" * 6001),  # large: redis-py's
    ("SET", "k", bytearray(b"abc")),
    ("SET", "k", memoryview(b"abc")),
    ("SET", "k", Level.HIGH),  # an int enum: redis-py writes its repr
    ("SET", "k", 2**63 - 1, -(2**63), 2**64, -(2**200)),
    ("GET\tX",),  # whitespace in a str command name: redis-py splits it
    (b"GET\tX",),  # not in a bytes one (only a space splits it)
]


def _reference():
    from redis.connection import Encoder, PythonRespSerializer

    return PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)


def test_the_packer_sends_what_redis_py_sends_for_every_kind_of_argument():
    from resizer.connections import CommandPacker

    reference, packer = _reference(), CommandPacker()
    for command in COMMANDS:
        assert _joined(packer.pack(*command)) == _joined(reference.pack(*command)), command


def test_small_commands_are_packed_by_hiredis_and_large_or_unusual_ones_by_redis_py(monkeypatch):
    """hiredis packs a dozen-argument HSET in ~1.3 us where redis-py's packer takes ~6: a job's start and ending
    are pipelines of many such commands. A large value must not go through it (it would be copied)."""
    import hiredis

    from resizer import connections

    packed, pack = [], hiredis.pack_command
    monkeypatch.setattr(connections.hiredis, "pack_command", lambda args: packed.append(args) or pack(args))
    packer = connections.CommandPacker()
    packer.pack("HSET", "rq:job:1", "status", "started", "n", 3, "score", 1.5)
    packer.pack("GET", b"k")
    packer.pack("HSET", "rq:job:1", "status", JobStatus.FINISHED)
    assert [args[0] for args in packed] == ["HSET", "GET", "HSET"]
    packed.clear()
    large = b"v" * 6001
    assert any(part is large for part in packer.pack("SET", "k", large))
    for unusual in (memoryview(b"abc"), bytearray(b"abc"), Level.HIGH, "s" * 6001):
        packer.pack("SET", "k", unusual)
    packer.pack("CONFIG GET", "appendfsync")
    assert packed == []


def test_the_packer_refuses_what_redis_py_refuses():
    from resizer.connections import CommandPacker

    for value in (True, None, object()):
        with pytest.raises(DataError):
            CommandPacker().pack("SET", "k", value)
    with pytest.raises(ValueError):  # an int of 4,300+ digits: Python refuses its repr (hiredis's packer crashes)
        CommandPacker().pack("SET", "k", 10**5000)


def test_a_joined_value_is_sent_as_its_parts_and_received_as_one_string():
    from resizer.connections import CommandPacker, Joined

    reference, packer = _reference(), CommandPacker()
    large = b"\xff\xd8" + b"x" * 10_000
    for value in (Joined(b"header\n", large), Joined(b"header\n", b"tiny"), Joined(large, b"tail", large)):
        for key in ("resizer:original:t", "k" * 7000, memoryview(b"k")):  # small, large, of redis-py's own types
            chunks = packer.pack("SET", key, value, "EX", 604800)
            assert _joined(chunks) == _joined(reference.pack("SET", key, bytes(value), "EX", 604800))
        assert _joined(packer.pack("CLIENT SETINFO", value)) == _joined(reference.pack("CLIENT SETINFO", bytes(value)))
        chunks = packer.pack("SET", "resizer:original:t", value, "EX", 604800)
        assert all(any(chunk is part for chunk in chunks) for part in value.parts if len(part) > 6000)
        assert all(len(chunk) <= 6100 or chunk in value.parts for chunk in chunks)  # small pieces gathered


def test_a_joined_value_reaches_redis_whole(redis_server):
    from resizer.connections import Joined, make_redis

    client = make_redis(Settings.from_env({"APP_ENV": "testing", "REDIS_URL": redis_server}))
    try:
        large = bytes(range(256)) * 100
        with client.pipeline() as pipe:
            pipe.set("joined", Joined(b"head\n", large))
            pipe.strlen("joined")
            assert pipe.execute() == [True, len(large) + 5]
        client.set("joined", Joined(b"head\n", large))  # outside a pipeline too
        assert client.get("joined") == b"head\n" + large
    finally:
        client.flushdb()
        client.close()
