"""Signed requests to a plain-HTTP object store on kept-alive ``http.client`` connections.

The worker stores an output with one small PUT per job.  botocore's own HTTP
session (urllib3 under it) costs ~0.6 ms of CPU to send a 3 KB body and read the
answer; the standard library's ``http.client`` on a connection kept per thread
does the same in ~0.35 ms.  Only for ``http://`` endpoints without a proxy (MinIO
in compose, the local S3 server): HTTPS and proxies stay with botocore, whose
certificate and proxy handling this does not repeat.

A connection the server closed while it sat idle is opened again once; any
other failure to send is the caller's to judge (it sends the request through
boto3, with its retries).
"""

from __future__ import annotations

import http.client
import socket
import threading
import weakref
from urllib.parse import urlsplit


class NoAnswer(Exception):
    """The request may have reached the server, but no answer came within the read timeout."""


class KeptAlive:
    """One kept-alive connection per thread to one ``http://host:port``."""

    def __init__(self, endpoint_url: str, *, connect_timeout: float, read_timeout: float):
        parts = urlsplit(endpoint_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not a plain-HTTP endpoint: {endpoint_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()  # every thread's, for close()
        weakref.finalize(self, _close_all, self._lock, self._open)  # a sender dropped closes its sockets

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """(HTTP status, body) of the answer.  Raises NoAnswer after a read timeout, OSError (or
        ``http.client.HTTPException``) when it could not be sent or the answer was cut."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None:  # not closed by close() meanwhile
            try:
                return self._exchange(conn, method, path, headers, body)
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                # Kept-alive connections are closed by servers after an idle while; the PUT is
                # idempotent (its key is the job's), so it is sent once more on a fresh one.
                pass
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        conn.auto_open = 0  # never connected again behind our back (without its options, outside _open)
        try:
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sock.settimeout(self.read_timeout)
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._open.add(conn)
        self._local.conn = conn
        return self._exchange(conn, method, path, headers, body)

    def _exchange(self, conn: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str],
                  body: bytes) -> tuple[int, bytes]:
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            content = response.read()
        except TimeoutError:
            self._drop(conn)
            raise NoAnswer(f"no answer within {self.read_timeout:g} s") from None
        except BaseException:
            self._drop(conn)
            raise
        if response.will_close:
            self._drop(conn)
        return response.status, content

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        self._local.conn = None
        with self._lock:
            self._open.discard(conn)
        conn.close()

    def close(self) -> None:
        """Close every thread's connection (a later send opens a new one)."""
        _close_all(self._lock, self._open)


def _close_all(lock: threading.Lock, conns: set[http.client.HTTPConnection]) -> None:
    with lock:
        closing = list(conns)
        conns.clear()
    for conn in closing:
        conn.close()
