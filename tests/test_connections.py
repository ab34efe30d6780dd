"""How every process talks to Redis."""

from settings import Settings


def test_redis_replies_are_parsed_by_hiredis_and_large_values_are_sent_uncopied():
    """hiredis parses a 2.8 MB reply in ~1 ms where redis-py's parser takes ~9; its packer, though, copies every
    argument into one buffer (a 2.8 MB SET: 7 ms), so commands are packed by redis-py's."""
    from redis._parsers import _HiredisParser

    from resizer.connections import make_redis

    client = make_redis(Settings.from_env({"APP_ENV": "testing", "REDIS_URL": "redis://127.0.0.1:6379/15"}))
    connection = client.connection_pool.make_connection()
    assert isinstance(connection._parser, _HiredisParser)
    value = b"v" * 100_000
    assert any(part is value for part in connection._command_packer.pack("SET", "k", value))
