"""AWS Signature Version 4 for the two requests signed on every job: the output's PUT (workers) and the
presigned GET URL of each output (every status answer of a finished job).

botocore's signers (``S3SigV4Auth``, ``S3SigV4QueryAuth``) make these strings through a request object: they copy
its headers into a case-insensitive map twice, split and re-join its URL, and derive the signing key with four
HMACs on every call (~100 µs of CPU a presigned URL here). This makes the same strings from their parts and
derives the key once a day (~15 µs). It covers only what the service signs: S3, static keys without a session
token, path-style URLs whose object path is percent-encoded as botocore encodes it, no query string of the request's
own, an unsigned payload for PUTs (the client's ``payload_signing_enabled=False``). ``Storage`` uses botocore for
anything else. ``tests/test_storage.py`` holds both to the bytes boto3's client makes for many keys, headers and
times.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, urlsplit

import botocore.auth

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# Headers botocore leaves out of a signature (botocore.auth.SIGNED_HEADERS_BLACKLIST).
UNSIGNED_HEADERS = frozenset({
    "baggage", "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "traceparent", "tracestate", "trailer", "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Headers botocore's signer replaces or removes before it signs: a request carrying any of them is botocore's to sign.
REPLACED_HEADERS = frozenset({"authorization", "date", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"})


def timestamp() -> str:
    """SigV4's request time (``X-Amz-Date``, UTC to the second), read from the clock botocore's signers read: a
    request signed here and one signed by botocore at the same instant are the same bytes."""
    return botocore.auth.get_current_datetime().strftime("%Y%m%dT%H%M%SZ")


def host_of(url: str) -> str:
    """The Host header botocore signs for ``url``: lower case, the port only when it is not the scheme's own."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


class Signer:
    """SigV4 for one set of static keys, one region, one service."""

    def __init__(self, access_key: str, secret_key: str, region: str, service: str = "s3"):
        self.access_key, self.region, self.service = access_key, region, service
        self._secret = ("AWS4" + secret_key).encode()
        self._day_key: tuple[str, bytes] = ("", b"")  # (YYYYMMDD, the signing key derived for it)

    def _key(self, day: str) -> bytes:
        cached_day, key = self._day_key
        if cached_day != day:
            key = hmac.new(self._secret, day.encode(), hashlib.sha256).digest()
            for part in (self.region, self.service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._day_key = (day, key)  # one tuple: a thread reading it sees an old pair or a new one, never a mix
        return key

    def _signature(self, amz_date: str, scope: str, canonical_request: str) -> str:
        to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"
        return hmac.new(self._key(amz_date[:8]), to_sign.encode(), hashlib.sha256).hexdigest()

    def presign_get(self, base: str, host: str, path: str, expires: int, amz_date: str) -> str:
        """The presigned URL of ``GET base + path``; ``path`` is already percent-encoded (its canonical form)."""
        scope = f"{amz_date[:8]}/{self.region}/{self.service}/aws4_request"
        query = (f"X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={quote(f'{self.access_key}/{scope}', safe='-_.~')}"
                 f"&X-Amz-Date={amz_date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host")
        canonical = f"GET\n{path}\n{query}\nhost:{host}\n\nhost\n{UNSIGNED_PAYLOAD}"
        return f"{base}{path}?{query}&X-Amz-Signature={self._signature(amz_date, scope, canonical)}"

    def sign_headers(self, method: str, host: str, path: str, headers: dict[str, str], amz_date: str) -> None:
        """Add ``X-Amz-Date``, ``X-Amz-Content-SHA256`` (unsigned payload) and ``Authorization`` to ``headers``:
        the headers of a request to ``path`` (percent-encoded, without a query) with an unsigned payload. Raises
        ValueError for headers botocore would replace (``REPLACED_HEADERS``) or a name with spaces around it."""
        for name in headers:
            if name.lower() in REPLACED_HEADERS or name != name.strip():
                raise ValueError(f"header {name!r} is botocore's to sign")
        headers["X-Amz-Date"] = amz_date
        headers["X-Amz-Content-SHA256"] = UNSIGNED_PAYLOAD
        signed: dict[str, list[str]] = {}
        for name, value in headers.items():
            lower = name.lower()
            if lower not in UNSIGNED_HEADERS:
                signed.setdefault(lower, []).append(" ".join(value.split()))
        signed.setdefault("host", [host])
        names = sorted(signed)
        canonical_headers = "".join(f"{name}:{','.join(signed[name])}\n" for name in names)
        signed_names = ";".join(names)
        scope = f"{amz_date[:8]}/{self.region}/{self.service}/aws4_request"
        canonical = f"{method}\n{path}\n\n{canonical_headers}\n{signed_names}\n{UNSIGNED_PAYLOAD}"
        headers["Authorization"] = (f"{ALGORITHM} Credential={self.access_key}/{scope}, SignedHeaders={signed_names}, "
                                    f"Signature={self._signature(amz_date, scope, canonical)}")
