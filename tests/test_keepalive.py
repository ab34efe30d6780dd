"""The kept-alive connections that carry the worker's directly signed PUTs (resizer/keepalive.py)."""

import http.client
import socket
import threading
import time
import uuid

import pytest

from resizer.errors import StorageUnavailable
from resizer.keepalive import KeptAlive, NoAnswer
from resizer.storage import Storage
from settings import Settings
from tests.conftest import wait_until


class Server:
    """A minimal HTTP/1.1 server on a real socket: it records what it got and answers as told."""

    def __init__(self, *, close_after: int = 0, silent: bool = False, connection_close: bool = False,
                 silent_from: int = 0, cut: bool = False, family: int = socket.AF_INET, answer: bytes = b"ok"):
        self.sock = socket.socket(family)
        self.sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.close_after, self.silent, self.connection_close = close_after, silent, connection_close
        self.silent_from, self.cut, self.answer = silent_from, cut, answer
        self.connections = 0
        self.requests: list[tuple[str, dict, bytes]] = []
        self.threads: list[threading.Thread] = []
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        served = 0
        with conn, conn.makefile("rb") as file:
            while True:
                line = file.readline()
                if not line:
                    return
                headers = {}
                while (header := file.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = file.read(int(headers.get("content-length", 0)))
                self.requests.append((line.decode("latin-1").strip(), headers, body))
                if self.silent or (self.silent_from and len(self.requests) >= self.silent_from):
                    self.stopped.wait(5)
                    return
                if self.cut:  # an answer that begins, then the connection ends
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok")
                    return
                extra = b"Connection: close\r\n" if self.connection_close else b""
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(self.answer) + extra + b"\r\n"
                             + self.answer)
                served += 1
                if self.connection_close or (self.close_after and served >= self.close_after):
                    return  # as a server does with a connection idle past its keep-alive time

    def stop(self) -> None:
        self.stopped.set()
        self.sock.close()
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


SENDERS: list[KeptAlive] = []


def _sender(port: int, read_timeout: float = 5.0, host: str = "127.0.0.1") -> KeptAlive:
    SENDERS.append(KeptAlive(f"http://{host}:{port}", connect_timeout=5.0, read_timeout=read_timeout))
    return SENDERS[-1]


@pytest.fixture(autouse=True)
def _close_senders():
    yield
    while SENDERS:
        SENDERS.pop().close()


def test_puts_share_one_connection_and_arrive_whole(server):
    sender = _sender(server.port)
    for i in range(5):
        assert sender.put(f"/b/k{i}", {"Content-Type": "image/jpeg", "x-amz-meta-a": b"1"},
                           b"x" * (1000 * i)) == (200, b"ok")
    assert server.connections == 1
    assert [r[0] for r in server.requests] == [f"PUT /b/k{i} HTTP/1.1" for i in range(5)]
    assert [len(r[2]) for r in server.requests] == [0, 1000, 2000, 3000, 4000]
    line, headers, _ = server.requests[-1]
    assert headers["host"] == f"127.0.0.1:{server.port}" and headers["content-type"] == "image/jpeg"
    assert headers["x-amz-meta-a"] == "1" and headers["content-length"] == "4000"


def test_a_connection_the_server_closed_is_opened_again_once():
    server = Server(close_after=1)
    try:
        sender = _sender(server.port)
        assert sender.put("/b/1", {}, b"a") == (200, b"ok")
        # the server has closed it; the next PUT finds that out and goes again on a new connection
        wait_until(lambda: not server.threads[0].is_alive(), "the server to close the first connection")
        assert sender.put("/b/2", {}, b"b") == (200, b"ok")
        assert server.connections == 2 and [r[2] for r in server.requests] == [b"a", b"b"]
    finally:
        server.stop()


def test_an_answer_that_closes_the_connection_is_not_reused():
    server = Server(connection_close=True)
    try:
        sender = _sender(server.port)
        for i in range(3):
            assert sender.put(f"/b/{i}", {}, b"x")[0] == 200
        assert server.connections == 3 and len(server.requests) == 3
    finally:
        server.stop()


@pytest.mark.parametrize("reused", [False, True])
def test_no_answer_within_the_read_timeout_is_no_answer_and_not_sent_again(reused):
    """Whether on a new connection or a kept one, a PUT the server took and never answered is not sent twice
    (the server may have stored it), and the wait is the read timeout, not the connect timeout (5 s)."""
    server = Server(silent_from=2 if reused else 1)
    try:
        sender = _sender(server.port, read_timeout=0.3)
        if reused:
            assert sender.put("/b/first", {}, b"x") == (200, b"ok")
        started = time.monotonic()
        with pytest.raises(NoAnswer):
            sender.put("/b/slow", {}, b"x")
        assert time.monotonic() - started < 2.5
        assert [r[0] for r in server.requests][-1] == "PUT /b/slow HTTP/1.1"
        assert len(server.requests) == (2 if reused else 1) and server.connections == 1
    finally:
        server.stop()


def test_an_answer_cut_short_is_an_error_and_not_sent_again():
    """Once an answer has begun the server has the PUT: a connection that ends in its middle is not a reason to
    send it again (the caller decides)."""
    server = Server(cut=True)
    try:
        with pytest.raises(http.client.HTTPException):
            _sender(server.port).put("/b/cut", {}, b"x")
        assert len(server.requests) == 1
    finally:
        server.stop()


def test_the_host_header_is_the_one_botocore_signs():
    """SigV4 signs the Host header; http.client writes it itself (brackets for IPv6, no port 80)."""
    from botocore.auth import _host_from_url

    try:
        server = Server(family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        _sender(server.port, host="[::1]").put("/b/k", {}, b"x")
        assert server.requests[0][1]["host"] == _host_from_url(f"http://[::1]:{server.port}/b/k") \
            == f"[::1]:{server.port}"
    finally:
        server.stop()



def test_a_server_that_is_not_there_is_an_os_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(OSError):
            _sender(port).put("/b/k", {}, b"x")


def test_each_thread_has_its_own_connection(server):
    sender = _sender(server.port)
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(sender.put(f"/b/{i}", {}, b"x")))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(200, b"ok")] * 4 and server.connections == 4


def test_a_thread_that_ends_takes_its_connection_with_it(server):
    import gc

    sender = _sender(server.port)
    threads = [threading.Thread(target=sender.put, args=(f"/b/{i}", {}, b"x")) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    assert server.connections == 5 and not sender._open
    wait_until(lambda: not any(t.is_alive() for t in server.threads), "the server to see every connection closed")


@pytest.mark.parametrize("endpoint,env,kept", [
    ("http://minio:9000", {}, True),
    ("https://s3.example.com", {}, False),  # TLS stays with botocore (its certificates)
    ("http://minio:9000", {"HTTP_PROXY": "http://proxy:3128"}, False),  # so do proxies
    ("http://minio:9000", {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "minio"}, True),
    ("http://minio:9000", {"HTTPS_PROXY": "http://proxy:3128"}, True),  # botocore too sends http:// directly
])
def test_only_plain_http_without_a_proxy_is_sent_on_kept_alive_connections(monkeypatch, endpoint, env, kept):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": endpoint}))
    assert (storage._kept_alive is not None) is kept


def _storage(server: Server, read_timeout: float = 5.0) -> Storage:
    storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": f"http://127.0.0.1:{server.port}"}),
                      read_timeout=read_timeout)
    SENDERS.append(storage._kept_alive)
    return storage


def test_a_put_that_gets_no_answer_is_storage_unavailable_without_a_second_wait():
    server = Server(silent=True)
    try:
        storage = _storage(server, read_timeout=0.3)
        with pytest.raises(StorageUnavailable):
            storage.put("k", b"x", "image/jpeg")
        assert len(server.requests) == 1 and "amz-sdk-request" not in server.requests[0][1]  # boto3 sent nothing
        assert storage._direct_put
    finally:
        storage.client.close()
        server.stop()


def test_a_put_the_kept_alive_connection_could_not_send_goes_through_boto3():
    server = Server(answer=b"")  # (botocore takes a 200 with a body it cannot parse for an error)
    storage = _storage(server)

    def refused(*_):
        raise ConnectionRefusedError("refused")

    storage._kept_alive.put = refused
    try:
        storage.put("k", b"x", "image/jpeg")
        assert [("amz-sdk-request" in r[1]) for r in server.requests] == [True]  # boto3's PUT, answered 200
        assert storage._direct_put
    finally:
        storage.client.close()
        server.stop()


def test_a_put_through_the_kept_alive_connection_is_stored(tmp_path):
    """Against a server that checks SigV4: signed PUTs stored on one connection, and the next one after the
    server went away and came back (every kept connection closed) is stored too, without boto3."""
    from resizer.local import free_port
    from tests.conftest import S3Server

    keys = ("resizer-test", "kept-alive-secret-0123456789")
    (tmp_path / "bucket").mkdir()
    server = S3Server(tmp_path, free_port()).start(keys)
    storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": f"http://127.0.0.1:{server.port}",
                                         "S3_BUCKET": "bucket", "S3_ACCESS_KEY_ID": keys[0],
                                         "S3_SECRET_ACCESS_KEY": keys[1]}))
    try:
        assert storage._kept_alive is not None
        sent = []
        put = storage._kept_alive.put
        storage._kept_alive.put = lambda *a: sent.append(put(*a)[0]) or (sent[-1], b"")
        names = [f"outputs/{uuid.uuid4()}/é {i}+.jpg" for i in range(3)]
        for i, name in enumerate(names[:2]):
            storage.put(name, bytes([i]) * 3000, "image/jpeg", None, {"resizer-record": "v1;e30="})
        assert storage.head(names[0])["metadata"] == {"resizer-record": "v1;e30="}  # rclone keeps it in memory
        server.stop()
        server.start(keys)
        storage.put(names[2], b"\x02" * 3000, "image/jpeg")
        assert sent == [200, 200, 200] and storage._direct_put
        assert [storage.get(name) for name in names] == [bytes([i]) * 3000 for i in range(3)]
    finally:
        storage._kept_alive.close()
        storage.client.close()
        server.stop()
