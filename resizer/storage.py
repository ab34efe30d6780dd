"""Object storage behind a small interface: put, get, delete, presigned_url, ping.

One S3 implementation (boto3, SigV4, path-style) that works with AWS S3, MinIO
and ``rclone serve s3``.  Clients are built once per process.  Presigned URLs
are signed for ``S3_PUBLIC_ENDPOINT_URL`` when clients reach storage by another
host name than the services do (MinIO inside docker-compose); signing needs no
network call.

Failures to reach storage become ``StorageUnavailable`` (retryable); a missing
object is ``None`` from ``get``, never an exception.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSPreparedRequest, AWSRequest, HTTPHeaders
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError
from botocore.hooks import first_non_none_response
from botocore.utils import determine_content_length, get_environ_proxies, percent_encode

from settings import Settings

from . import sigv4
from .errors import StorageUnavailable
from .keepalive import KeptAlive, NoAnswer

log = logging.getLogger(__name__)

_MISSING = ("NoSuchKey", "404", "NotFound")
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")


SMALL_BODY = 1 << 20


def _no_continue_for_small_bodies(params, **_) -> None:
    """botocore sends every PUT body only after a ``100 Continue`` (``Expect``): a round trip more, and ~0.3 ms of
    client CPU, for a 3 KB output. It saves sending a large body that would be refused; a small one is sent."""
    length = determine_content_length(params["body"]) if params.get("body") is not None else None
    if length is not None and length <= SMALL_BODY:
        params["headers"].pop("Expect", None)


# Refusals of a directly signed PUT that say nothing about how it was made: the client's PUT may well succeed.
_PASSING_REFUSALS = ("RequestTimeout", "OperationAborted", "NoSuchBucket", "SlowDown", "RequestTimeTooSkewed")


def _signer(settings: Settings, region: str | None, base_url: str) -> sigv4.Signer | None:
    """``sigv4``'s signer where it makes what botocore's would: static keys (a session token, or keys resolved by
    boto3 from its chain, are botocore's), a region, and object URLs that are ``scheme://host[:port]/path``."""
    parts = urlsplit(base_url)
    if not (settings.s3_access_key_id and settings.s3_secret_access_key and region) or parts.query or \
            parts.fragment or parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return sigv4.Signer(settings.s3_access_key_id, settings.s3_secret_access_key, region)


class Storage:
    def __init__(self, settings: Settings, *, connect_timeout: float = 2.0, read_timeout: float = 15.0):
        self.bucket = settings.s3_bucket
        # Hashing multi-megabyte bodies for payload signatures and extra CRC
        # checksums cost as much CPU as the transfer itself; integrity comes
        # from TLS (and from decoding the image) instead.
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path", "payload_signing_enabled": False},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=32,
        )
        common = dict(
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            region_name=settings.s3_region,
            config=config,
        )
        session = boto3.session.Session()
        self.client = session.client("s3", endpoint_url=settings.s3_endpoint_url, **common)
        if settings.presign_endpoint_url != settings.s3_endpoint_url:
            self.signer = session.client("s3", endpoint_url=settings.presign_endpoint_url, **common)
        else:
            self.signer = self.client
        self.client.meta.events.register_last("before-call.s3", _no_continue_for_small_bodies)
        # A presigned URL through the client costs ~0.7 ms of CPU (parameter validation, endpoint rules, event
        # hooks) on every status answer of a finished job; ``sigv4`` makes the same URL in ~15 µs. Keys are static
        # (settings); without them the client resolves credentials and signs.
        self._credentials = (Credentials(settings.s3_access_key_id, settings.s3_secret_access_key)
                             if settings.s3_access_key_id and settings.s3_secret_access_key else None)
        self._presign_base = f"{self.signer.meta.endpoint_url.rstrip('/')}/{self.bucket}/"
        self._region = self.signer.meta.region_name
        # With static keys and no session token, both signatures a job needs (the output's PUT, each presigned URL)
        # are made by ``sigv4`` from their parts: the same bytes as botocore's signers, in ~1/7 of the CPU.
        self._presign_origin = "{0.scheme}://{0.netloc}".format(urlsplit(self._presign_base))
        self._presign_host = sigv4.host_of(self._presign_base)
        self._presigner = _signer(settings, self._region, self._presign_base)
        if self._presigner is not None and not self._presigns_as_the_client():
            # e.g. an endpoint path botocore encodes otherwise (%7E, spaces)
            log.info("storage: presigned URLs are made by boto3's client (the direct signer differs for %s)",
                     self._presign_base)
            self._presigner = None
        self._put_signer = _signer(settings, self.client.meta.region_name, self.client.meta.endpoint_url)
        # A PUT through the client costs ~2.2 ms of CPU for a 3 KB output (parameter validation and
        # serialization, endpoint rules, a dozen event hooks); most jobs make one. The same request signed by
        # botocore's S3 SigV4 signer and sent on the client's own connection pool costs ~1.1 ms. Only with
        # static keys and an explicit endpoint (MinIO, rclone, any S3-compatible store: no endpoint rules to
        # apply).
        self._http = getattr(getattr(self.client, "_endpoint", None), "http_session", None)
        # (aws-global: botocore's endpoint rules sign its PUTs for us-east-1; the client sends them)
        self._direct_put = bool(self._credentials and settings.s3_endpoint_url and self._http is not None
                                and self.client.meta.region_name != "aws-global")
        self._object_base = f"{self.client.meta.endpoint_url.rstrip('/')}/{self.bucket}/"
        self._object_host = sigv4.host_of(self._object_base)
        # Sent on kept-alive http.client connections where that is plain HTTP that botocore would send without a
        # proxy (~0.32 ms of CPU instead of its session's ~0.53 for a 3 KB PUT); HTTPS and proxies stay with it.
        self._kept_alive = None
        endpoint = self.client.meta.endpoint_url
        proxies = self.client.meta.config.proxies
        if proxies is None:  # botocore's own choice (endpoint.py): the client's, else the environment's
            proxies = get_environ_proxies(endpoint)
        if self._direct_put and endpoint.startswith("http://") and not proxies.get("http"):
            self._kept_alive = KeptAlive(endpoint, connect_timeout=connect_timeout, read_timeout=read_timeout)
        self._endpoint_base = "{0.scheme}://{0.netloc}".format(urlsplit(endpoint))

    def put(self, key: str, data: bytes, content_type: str, cache_control: str | None = None,
            metadata: dict[str, str] | None = None) -> None:
        """Store ``data``; ``metadata`` (ASCII, 2 KB in all) travels with the object as x-amz-meta-*."""
        refusal = None
        if self._direct_put and isinstance(data, bytes) and len(data) <= SMALL_BODY and \
                all(v.isascii() for v in (metadata or {}).values()):
            refusal = self._put_direct(key, data, content_type, cache_control, metadata)
            if refusal is None:
                return
        extra: dict = {"CacheControl": cache_control} if cache_control else {}
        if metadata:
            extra["Metadata"] = metadata
        self._call("put", key, Body=data, ContentType=content_type, **extra)
        if refusal is not None and (300 <= refusal[0] < 500 and refusal[0] not in (408, 429)
                                    and refusal[1] not in _PASSING_REFUSALS):
            # Refused here, stored through the client: the two disagree about this store.
            log.warning("storage refused a directly signed PUT (HTTP %s %s) that boto3 then stored: every PUT of "
                        "this process goes through boto3 from now on", *refusal)
            self._direct_put = False

    def _put_direct(self, key: str, data: bytes, content_type: str, cache_control: str | None,
                    metadata: dict[str, str] | None) -> tuple[int, str] | None:
        """The PUT that ``client.put_object`` sends, signed and sent without the client (a small body, in one
        piece). None if it was stored; else (HTTP status, S3 error code), (0, "") if it got no answer, and the
        caller sends it through the client (its retries, its errors). No answer within the read timeout after
        the request went out is StorageUnavailable: the client would wait as long again, maybe twice."""
        headers = {"Content-Type": content_type}
        if cache_control:
            headers["Cache-Control"] = cache_control
        for name, value in (metadata or {}).items():
            headers[f"x-amz-meta-{name}"] = value
        url = self._object_base + percent_encode(key, safe="/~")
        if self._put_signer is not None:
            path = url[len(self._endpoint_base):]
            self._put_signer.sign_headers("PUT", self._object_host, path, headers, sigv4.timestamp())
            headers["Content-Length"] = str(len(data))
            prepared = AWSPreparedRequest("PUT", url, HTTPHeaders.from_dict(headers), data, False)
        else:
            request = AWSRequest(method="PUT", url=url, data=data, headers=headers)
            request.context["client_config"] = self.client.meta.config  # UNSIGNED-PAYLOAD, as the client signs it
            S3SigV4Auth(self._credentials, "s3", self.client.meta.region_name).add_auth(request)
            prepared = request.prepare()
        try:
            # Whoever answers the client's requests in its place (moto in the tests) answers this one too.
            response = first_non_none_response(self.client.meta.events.emit("before-send.s3.PutObject",
                                                                             request=prepared))
            if response is not None:
                status, content = response.status_code, response.content
            elif self._kept_alive is not None:
                status, content = self._kept_alive.put(prepared.url[len(self._endpoint_base):], prepared.headers,
                                                       prepared.body)
            else:
                response = self._http.send(prepared)
                status, content = response.status_code, response.content
        except (ReadTimeoutError, NoAnswer) as exc:
            raise StorageUnavailable(f"Object storage did not answer ({_describe(exc)}).") from None
        except Exception as exc:  # as botocore's endpoint does: any failure to send is the retry's to judge
            log.info("storage: a directly signed PUT of %s got no answer (%s); sending it through boto3", key, exc)
            return 0, ""
        if 200 <= status < 300:
            return None
        code = _ERROR_CODE.search(content or b"")
        refusal = status, code.group(1).decode(errors="replace") if code else ""
        log.info("storage: a directly signed PUT of %s was refused (HTTP %s %s); sending it through boto3", key,
                 *refusal)
        return refusal

    def head(self, key: str) -> dict | None:
        """The object's metadata (names lower-cased) and ``last_modified``, or None if it does not exist."""
        try:
            response = self._call("head", key)
        except _Missing:
            return None
        meta = {k.lower(): v for k, v in response.get("Metadata", {}).items()}
        return {"metadata": meta, "last_modified": response.get("LastModified"), "bytes": response.get("ContentLength")}

    def list(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """(key, last modified) of every object under ``prefix``."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"], item["LastModified"]
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"Object storage failed ({_describe(exc)}).") from None

    def get(self, key: str) -> bytes | None:
        try:
            response = self._call("get", key)
        except _Missing:
            return None
        with response["Body"] as body:
            return body.read()

    def get_head_bytes(self, key: str, length: int) -> bytes | None:
        """The first ``length`` bytes of the object (a ranged GET), or None if it does not exist."""
        try:
            response = self._call("get", key, Range=f"bytes=0-{length - 1}")
        except _Missing:
            return None
        with response["Body"] as body:
            return body.read()

    def delete(self, key: str) -> None:
        self._call("delete", key)

    def delete_many(self, keys: list[str]) -> None:
        """Delete up to 1000 keys in one request (missing keys are not an error)."""
        try:
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"Object storage failed ({_describe(exc)}).") from None
        errors = [e for e in response.get("Errors", []) if e.get("Code") not in _MISSING]
        if errors:
            raise StorageUnavailable(f"Object storage refused to delete {len(errors)} object(s): "
                                     f"{errors[0].get('Code')} {errors[0].get('Message', '')}".strip())

    def exists(self, key: str) -> bool:
        try:
            self._call("head", key)
        except _Missing:
            return False
        return True

    def presigned_url(self, key: str, ttl: int) -> str:
        if self._presigner is not None and type(ttl) is int:  # (botocore writes a float's or a bool's str())
            return self._direct_presigned_url(key, ttl, sigv4.timestamp())
        return self.signer.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                                  ExpiresIn=ttl)

    def _direct_presigned_url(self, key: str, ttl: int, amz_date: str) -> str:
        url = self._presign_base + percent_encode(key, safe="/~")
        return self._presigner.presign_get(self._presign_origin, self._presign_host, url[len(self._presign_origin):],
                                           ttl, amz_date)

    def _presigns_as_the_client(self) -> bool:
        """Does the direct signer make the URL boto3's client makes (checked once, at start, on a key with
        characters that need encoding, at the instant the client signed it)?"""
        key = "outputs/probe ~é+%/a b.jpg"
        theirs = self.signer.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                                    ExpiresIn=900)
        amz_date = parse_qs(urlsplit(theirs).query).get("X-Amz-Date", [""])[0]
        return self._direct_presigned_url(key, 900, amz_date) == theirs

    def ping(self) -> None:
        """Raise StorageUnavailable unless the bucket answers."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"Object storage is unreachable ({_describe(exc)}).") from None

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (local development and tests)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _code(exc) not in _MISSING + ("NoSuchBucket",):
                raise
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def _call(self, op: str, key: str, **kwargs):
        method = {
            "put": self.client.put_object,
            "get": self.client.get_object,
            "delete": self.client.delete_object,
            "head": self.client.head_object,
        }[op]
        try:
            return method(Bucket=self.bucket, Key=key, **kwargs)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise _Missing() from None
            if _status(exc) >= 500 or _code(exc) in ("SlowDown", "RequestTimeout", "ServiceUnavailable"):
                raise StorageUnavailable(f"Object storage failed ({_describe(exc)}).") from None
            raise
        except BotoCoreError as exc:
            log.warning("storage %s %s failed: %s", op, key, exc)
            raise StorageUnavailable(f"Object storage is unreachable ({_describe(exc)}).") from None


class _Missing(Exception):
    pass


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _describe(exc: Exception) -> str:
    return str(exc).splitlines()[0][:160]


# The bucket's layout.  Originals live under their own prefix so a lifecycle
# rule can expire any that a crash left behind; outputs and the manifest of a
# job sit together under the owner's prefix, fanned out by the token's first two
# characters (256 folders for our tokens), as thumbor's file storage does: a
# store that keeps folders on a file system (rclone, MinIO on one drive) then
# never holds one folder with an entry per job.  rclone's cost per PUT grows
# with the entries of the folder it writes into: 0.8 -> 2.8 ms of CPU over
# 15,000 jobs in one folder, flat at 0.8 ms fanned out (docs/performance.md).
MANIFEST = "manifest.json"  # a failure's record (a success's rides on its outputs)


def original_key(token: str) -> str:
    return f"originals/{token}"


def output_prefix(tenant: str, token: str) -> str:
    return f"outputs/{tenant}/{token[:2]}/{token}/"


def legacy_output_prefix(tenant: str, token: str) -> str:
    """Where outputs went before the fan-out: read (never written) until they expire (RESULT_RETENTION_DAYS)."""
    return f"outputs/{tenant}/{token}/"


def output_key(tenant: str, token: str, name: str, ext: str) -> str:
    return f"{output_prefix(tenant, token)}{name}.{ext}"


def manifest_key(tenant: str, token: str) -> str:
    return f"{output_prefix(tenant, token)}{MANIFEST}"

