"""Signed PUTs to a plain-HTTP object store on kept-alive ``http.client`` connections.

Workers store each output with one small PUT (the API, watermarks).  botocore's
own HTTP session (urllib3 under it) costs ~0.53 ms of CPU to send a 3 KB body and
read the answer; the standard library's ``http.client`` on a connection kept per
thread ~0.32 ms.  Only for ``http://`` endpoints that botocore would reach without
a proxy (MinIO in compose, the local S3 server): HTTPS and proxies stay with
botocore, whose certificate and proxy handling this does not repeat.

A PUT whose connection turns out to have been closed by the server while it sat
idle (the send fails, or the answer never starts) is sent once more on a new
connection, as botocore's retries would; once an answer has begun, nothing is
sent again.  Any other failure is the caller's to judge (``Storage.put`` sends
the request through boto3, with its retries).
"""

from __future__ import annotations

import http.client
import os
import threading
import weakref
from urllib.parse import urlsplit

# Connections made before a fork belong to the parent: a child forgets them (gunicorn without preload and RQ's
# SimpleWorker do not fork after sending; this keeps it safe if something does).
_SENDERS: weakref.WeakSet[KeptAlive] = weakref.WeakSet()


class NoAnswer(Exception):
    """The request went out (maybe in part), and the server neither read it nor answered within the read timeout."""


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
        self._open: set[http.client.HTTPConnection] = set()  # every live thread's, for close()
        weakref.finalize(self, _close_all, self._lock, self._open)  # a sender dropped closes its sockets
        _SENDERS.add(self)

    def put(self, path: str, headers, body: bytes) -> tuple[int, bytes]:
        """(HTTP status, body) of the answer to ``PUT path``.  Raises NoAnswer after the read timeout, OSError
        or ``http.client.HTTPException`` when it could not be sent or its answer was cut short."""
        holder = getattr(self._local, "holder", None)
        if holder is not None and holder.conn.sock is not None:  # (None: closed by close() meanwhile)
            try:
                return self._exchange(holder, path, headers, body)
            except _Unanswered:
                pass  # closed by the server while idle: once more, on a new connection
        holder = self._connect()
        try:
            return self._exchange(holder, path, headers, body)
        except _Unanswered as exc:
            raise exc.__cause__ from None

    def _connect(self) -> _Holder:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        conn.auto_open = 0  # never connected again behind our back (without the read timeout, outside _open)
        try:
            conn.connect()  # (TCP_NODELAY set by http.client)
            conn.sock.settimeout(self.read_timeout)
        except BaseException:
            conn.close()
            raise
        holder = self._local.holder = _Holder(conn)
        with self._lock:
            self._open.add(conn)
        # A thread that ends takes its connection with it.
        weakref.finalize(holder, _close_one, self._lock, self._open, conn)
        return holder

    def _exchange(self, holder: _Holder, path: str, headers, body: bytes) -> tuple[int, bytes]:
        conn, response = holder.conn, None
        try:
            conn.request("PUT", path, body=body, headers=headers)
            response = conn.getresponse()
            content = response.read()
        except TimeoutError:
            self._drop(holder)
            raise NoAnswer(f"no progress within the read timeout ({self.read_timeout:g} s)") from None
        except ConnectionError as exc:
            self._drop(holder)
            if response is None:  # nothing of an answer was read (RemoteDisconnected included): closed while idle?
                raise _Unanswered() from exc
            raise
        except BaseException:
            self._drop(holder)
            raise
        if response.will_close:
            self._drop(holder)
        return response.status, content

    def _drop(self, holder: _Holder) -> None:
        if getattr(self._local, "holder", None) is holder:
            self._local.holder = None
        _close_one(self._lock, self._open, holder.conn)

    def close(self) -> None:
        """Close every thread's connection; the next PUT opens a new one.  For shutdown and tests: a PUT in
        flight on another thread meanwhile fails (and ``Storage.put`` sends it through boto3)."""
        _close_all(self._lock, self._open)

    def _forget(self) -> None:
        self._local = threading.local()
        with self._lock:
            self._open.clear()  # the parent's sockets: left to it


class _Holder:
    """A thread's connection, in the thread's local storage: its finalizer closes the connection."""

    __slots__ = ("conn", "__weakref__")

    def __init__(self, conn: http.client.HTTPConnection):
        self.conn = conn


class _Unanswered(Exception):
    """Sending failed, or the connection ended before any answer: its cause is the error."""


def _close_one(lock: threading.Lock, conns: set, conn: http.client.HTTPConnection) -> None:
    with lock:
        conns.discard(conn)
    conn.close()


def _close_all(lock: threading.Lock, conns: set) -> None:
    with lock:
        closing = list(conns)
        conns.clear()
    for conn in closing:
        conn.close()


def _after_fork_in_child() -> None:
    for sender in list(_SENDERS):
        sender._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
