"""``resizer.sigv4`` against botocore's S3 signers, header by header (the storage tests compare whole requests)."""

import datetime
import random
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.utils import percent_encode

from resizer import sigv4

CONFIG = Config(signature_version="s3v4", s3={"addressing_style": "path", "payload_signing_enabled": False})


def _botocore(url: str, headers: dict, region: str) -> dict:
    request = AWSRequest(method="PUT", url=url, data=b"body", headers=dict(headers))
    request.context["client_config"] = CONFIG
    S3SigV4Auth(Credentials("AKID", "secret/key+"), "s3", region).add_auth(request)
    return dict(request.headers.items())


def test_headers_are_signed_as_botocore_signs_them(monkeypatch):
    """Random header names (any case, some that botocore leaves unsigned, some that differ only in case) and values
    (runs of spaces and tabs, which the canonical form collapses): the same Authorization, date and payload
    headers, at instants on both sides of midnight UTC (a new day derives a new signing key)."""
    rng = random.Random(4)
    names = ["Content-Type", "Cache-Control", "x-amz-meta-resizer-record", "X-Amz-Meta-A", "x-amz-meta-a",
             "User-Agent", "Expect", "Content-MD5", "x-amz-meta-b", "Transfer-Encoding", "X-Amzn-Trace-Id"]
    values = ["image/jpeg", "public,  max-age=60", " a\tb  c ", "eyJzIjoxfQ==;v=1", "100-continue", "x"]
    midnight = datetime.datetime(2026, 12, 1)
    signer = sigv4.Signer("AKID", "secret/key+", "eu-west-3")
    checked = 0
    for _ in range(300):
        headers = {name: rng.choice(values) for name in rng.sample(names, rng.randint(1, len(names)))}
        key = "".join(rng.choice("ab/é ~+%?#=&") for _ in range(rng.randint(1, 12)))
        base = rng.choice(["http://minio:9000", "https://s3.example.com", "http://[::1]:9000/prefix"])
        url = f"{base}/bucket/{percent_encode(key, safe='/~')}"
        instant = midnight + datetime.timedelta(seconds=rng.randint(-2, 2))
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, _i=instant, **k: _i)
        theirs = _botocore(url, headers, "eu-west-3")
        ours = dict(headers)
        signer.sign_headers("PUT", sigv4.host_of(url), urlsplit(url).path, ours, sigv4.timestamp())
        assert ours == theirs, (headers, url, instant)
        checked += 1
    assert checked == 300


@pytest.mark.parametrize("url,host", [("http://minio:9000/b/k", "minio:9000"), ("http://MinIO:80/b/k", "minio"),
                                      ("https://s3.example.com:443/b/k", "s3.example.com"),
                                      ("https://s3.example.com:8443/b", "s3.example.com:8443"),
                                      ("http://[::1]:9000/b", "[::1]:9000"), ("http://user:pw@h:1/b", "h:1")])
def test_the_host_signed_is_the_one_botocore_signs(url, host):
    assert sigv4.host_of(url) == host == botocore.auth._host_from_url(url)


@pytest.mark.parametrize("name", ["Date", "authorization", "X-Amz-Date", "x-amz-content-sha256",
                                  "X-Amz-Security-Token", " Content-Type"])
def test_headers_botocore_would_replace_are_refused_not_signed_otherwise(name):
    """botocore drops or rewrites these before signing (a Date header even replaces X-Amz-Date): signing them
    as they are would make another signature than its, so the caller must leave such a request to it."""
    with pytest.raises(ValueError):
        sigv4.Signer("AKID", "secret", "eu-west-3").sign_headers("PUT", "h", "/b/k", {name: "v"}, "20261130T000000Z")
