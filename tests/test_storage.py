"""Storage code paths against moto's in-process S3."""

import uuid
from collections import Counter
from urllib.parse import parse_qs, urlparse

import pytest

from botocore.utils import determine_content_length

from resizer.errors import StorageUnavailable
from resizer.storage import (SMALL_BODY, Storage, legacy_output_prefix, manifest_key, original_key, output_key,
                             output_prefix)
from settings import Settings


def test_put_get_delete(s3):
    s3.put("a/b.jpg", b"data", "image/jpeg")
    assert s3.get("a/b.jpg") == b"data"
    assert s3.exists("a/b.jpg")
    assert s3.client.head_object(Bucket=s3.bucket, Key="a/b.jpg")["ContentType"] == "image/jpeg"
    s3.delete("a/b.jpg")
    assert s3.get("a/b.jpg") is None and not s3.exists("a/b.jpg")


def test_ensure_bucket_is_idempotent(s3):
    s3.ensure_bucket()
    s3.ensure_bucket()
    s3.ping()


def test_presigned_urls_are_signed_for_the_public_endpoint():
    settings = Settings.from_env({"S3_ENDPOINT_URL": "http://minio:9000",
                                  "S3_PUBLIC_ENDPOINT_URL": "https://files.example.com"})
    url = Storage(settings).presigned_url("outputs/x.jpg", 120)
    parsed = urlparse(url)
    assert (parsed.scheme, parsed.netloc, parsed.path) == ("https", "files.example.com", "/resizer/outputs/x.jpg")
    query = parse_qs(parsed.query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["120"]


def _signed_by_botocore(monkeypatch) -> list:
    """Every signature botocore's own signers make from now on (``resizer.sigv4`` should make them instead)."""
    import botocore.auth

    calls = []
    for signer in (botocore.auth.S3SigV4Auth, botocore.auth.S3SigV4QueryAuth):
        original = signer.add_auth

        def add_auth(self, request, _original=original):
            calls.append(request.url)
            return _original(self, request)

        monkeypatch.setattr(signer, "add_auth", add_auth)
    return calls


@pytest.mark.parametrize("endpoint,public", [("http://minio:9000", None), ("http://minio:9000/", None),
                                             ("http://minio:9000", "https://files.example.com"),
                                             ("https://s3.eu-west-3.amazonaws.com", None),
                                             ("http://minio:9000/s3/", None), ("http://[::1]:9000", None),
                                             ("https://minio.example.com:443", "http://files.example.com:80/")])
@pytest.mark.parametrize("key", ["outputs/public/0b5e/default.jpg", "outputs/équipe a+b/t/thumb (2).webp",
                                 "outputs/x/~y/%41=?&#.png"])
def test_presigned_urls_are_the_ones_the_s3_client_makes(monkeypatch, endpoint, public, key):
    """The URL is signed by ``resizer.sigv4`` from its parts (botocore's query signer took ~100 µs a URL, this
    ~15): it must be, byte for byte, the URL boto3's generate_presigned_url makes at the same instant."""
    import datetime

    import botocore.auth

    env = {"S3_ENDPOINT_URL": endpoint, "S3_REGION": "eu-west-3"}
    if public:
        env["S3_PUBLIC_ENDPOINT_URL"] = public
    storage = Storage(Settings.from_env(env))
    instant = datetime.datetime(2026, 11, 29, 3, 30, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: instant)
    by_botocore = _signed_by_botocore(monkeypatch)
    ours = storage.presigned_url(key, 900)
    assert by_botocore == []  # made by resizer.sigv4
    theirs = storage.signer.generate_presigned_url("get_object", Params={"Bucket": storage.bucket, "Key": key},
                                                   ExpiresIn=900)
    assert by_botocore and ours == theirs


@pytest.mark.parametrize("env", [{"S3_ENDPOINT_URL": "http://minio:9000/a%7Eb/"},  # paths botocore encodes otherwise
                                 {"S3_ENDPOINT_URL": "http://minio:9000/a b/"}])
def test_where_the_direct_signer_would_differ_the_client_presigns(monkeypatch, env):
    """Checked once at start against the client's own URL: where they differ, the client makes every URL."""
    import datetime

    import botocore.auth

    storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": "http://minio:9000", **env}))
    assert storage._presigner is None
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: datetime.datetime(2026, 11, 30, 1))
    theirs = storage.signer.generate_presigned_url("get_object", Params={"Bucket": storage.bucket, "Key": "o/k"},
                                                   ExpiresIn=60)
    assert storage.presigned_url("o/k", 60) == theirs


def test_a_lifetime_that_is_not_an_int_is_presigned_by_the_client(monkeypatch):
    """botocore writes the lifetime as str() makes it (900.0): such a URL is the client's to make."""
    import datetime

    import botocore.auth

    storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": "http://minio:9000"}))
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: datetime.datetime(2026, 11, 30, 1))
    assert "X-Amz-Expires=900.0&" in storage.presigned_url("o/k", 900.0)


def test_presigned_urls_match_the_s3_client_for_any_key_region_lifetime_and_instant(monkeypatch):
    """Random keys (any character a key may hold), regions, lifetimes and instants, across midnight UTC (the
    signing key is derived once a day and kept): every URL is the one boto3 makes at that instant."""
    import datetime
    import random

    import botocore.auth

    rng = random.Random(14)
    alphabet = [chr(c) for c in range(32, 127)] + list("éßü€漢字😀\t")
    midnight = datetime.datetime(2026, 11, 30)
    for region in ("us-east-1", "eu-west-3", "auto"):
        storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": "http://minio:9000", "S3_REGION": region}))
        for _ in range(60):
            key = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
            ttl = rng.choice([1, 60, 900, 3600, 604800])
            instant = midnight + datetime.timedelta(seconds=rng.randint(-3, 3))
            monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, _i=instant, **k: _i)
            theirs = storage.signer.generate_presigned_url("get_object", ExpiresIn=ttl,
                                                           Params={"Bucket": storage.bucket, "Key": key})
            assert storage.presigned_url(key, ttl) == theirs, (region, key, ttl, instant)


def test_small_bodies_are_sent_without_waiting_for_100_continue(s3):
    sent = {}

    def record(request, **_):  # returns None: anything else would be taken as the response
        sent[determine_content_length(request.body)] = request.headers

    s3.client.meta.events.register("before-send.s3.PutObject", record)
    s3.put("small", b"x" * 3000, "image/jpeg")
    s3.put("large", b"x" * (2 << 20), "image/jpeg")
    assert "Expect" not in sent[3000] and sent[2 << 20]["Expect"] == b"100-continue"
    assert s3.get("small") == b"x" * 3000 and len(s3.get("large")) == 2 << 20


class _Body:  # what botocore reads an answer's body from
    def __init__(self, content: bytes = b""):
        self.content = content

    def stream(self, **_):
        return iter([self.content])


def _error(status: int, code: str) -> tuple[int, bytes]:
    return status, f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>".encode()


def _answering(storage: Storage, answers: list) -> list:
    """Every PUT the storage sends, answered in its place with the next status or raised exception (none left:
    200); returns the requests sent."""
    from botocore.awsrequest import AWSResponse

    sent = []

    def answer(request, **_):
        sent.append(request)
        status = answers.pop(0) if answers else 200
        if isinstance(status, Exception):
            raise status
        status, body = status if isinstance(status, tuple) else (status, b"")
        return AWSResponse(request.url, status, {}, _Body(body))

    storage.client.meta.events.register_first("before-send.s3.PutObject", answer)
    return sent


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _body(request) -> bytes:
    body = request.body
    return body if isinstance(body, bytes) else body.read()


@pytest.mark.parametrize("endpoint,region", [("http://minio:9000", "us-east-1"), ("https://s3.example.com/", "eu-west-3"),
                                             ("http://[::1]:9000/s3", "auto"), ("http://minio:80", "us-east-1")])
@pytest.mark.parametrize("key,cache_control,metadata", [
    ("outputs/public/0b5e/default.jpg", None, None),
    ("outputs/équipe a+b/t/thumb (2).webp", "public, max-age=60", {"resizer-record": "eyJzIjoxfQ==;v=1"}),
    ("outputs/x/~y/%41=?&#.png", None, {"a": "1", "b-c": "two words"}),
    ("outputs/t/0/v.avif", "no-store", {"spaced": "  three   spaced  words ", "Mixed-Case": "x"}),
])
def test_a_direct_put_is_the_request_the_s3_client_sends(monkeypatch, endpoint, region, key, cache_control, metadata):
    """The PUT is signed by ``resizer.sigv4`` and sent without the client (2.2 ms of CPU a PUT through the client;
    botocore's signer alone took ~77 µs, this ~11): it must be the request boto3's put_object sends at the same
    instant, signature included, but for boto3's own User-Agent and SDK headers."""
    import datetime

    import botocore.auth

    storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": endpoint, "S3_REGION": region}))
    sent = _answering(storage, [])
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: datetime.datetime(2026, 11, 29, 9))
    data = bytes(range(256)) * 12
    by_botocore = _signed_by_botocore(monkeypatch)
    storage.put(key, data, "image/webp", cache_control, metadata)
    assert by_botocore == []  # signed by resizer.sigv4
    direct = sent[-1]
    storage._direct_put = False
    storage.put(key, data, "image/webp", cache_control, metadata)
    client = sent[-1]
    assert len(sent) == 2 and (direct.method, direct.url) == (client.method, client.url)
    sdk_only = {"user-agent", "amz-sdk-invocation-id", "amz-sdk-request"}
    theirs = {k.lower(): _text(v) for k, v in client.headers.items() if k.lower() not in sdk_only}
    ours = {k.lower(): _text(v) for k, v in direct.headers.items()}
    assert ours == theirs and "authorization" in ours
    assert _body(direct) == _body(client) == data


def test_puts_for_the_aws_global_region_go_through_the_client():
    """botocore's endpoint rules sign a PUT for aws-global as us-east-1: only the client knows that."""
    storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": "http://minio:9000", "S3_REGION": "aws-global"}))
    sent = _answering(storage, [])
    storage.put("o/k.jpg", b"x" * 100, "image/jpeg")
    assert len(sent) == 1 and "/us-east-1/s3/aws4_request" in _text(sent[0].headers["Authorization"])


def test_a_put_not_stored_directly_goes_through_the_client():
    """Anything but a 2xx (a 503, no answer at all) is sent again by boto3, whose retries and errors decide."""
    from botocore.exceptions import EndpointConnectionError

    storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": "http://minio:9000"}))
    sent = _answering(storage, [503, 503, 200, EndpointConnectionError(endpoint_url="http://minio:9000"), 200])
    storage.put("k", b"x", "image/jpeg")  # direct: 503; the client: 503, then 200 (its retry)
    storage.put("k", b"x", "image/jpeg")  # direct: no answer; the client: 200
    assert [_text(r.headers.get("amz-sdk-request", "direct")) for r in sent] == [
        "direct", "attempt=1; max=3", "attempt=2; max=3", "direct", "attempt=1; max=3"]
    assert storage._direct_put  # neither says the direct request is wrong
    storage.put("k", b"x", "image/jpeg")
    assert len(sent) == 6 and "amz-sdk-request" not in sent[-1].headers


def test_a_put_refused_directly_and_stored_by_the_client_sends_every_later_put_through_the_client(caplog):
    storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": "http://minio:9000"}))
    sent = _answering(storage, [403, 200])
    storage.put("k", b"x", "image/jpeg")
    assert "every PUT of this process goes through boto3" in caplog.text
    storage.put("k2", b"x", "image/jpeg")
    assert len(sent) == 3 and all("amz-sdk-request" in r.headers for r in sent[1:])


def test_a_put_refused_by_both_raises_and_keeps_the_direct_path():
    from botocore.exceptions import ClientError

    storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": "http://minio:9000"}))
    _answering(storage, [403, 403])
    with pytest.raises(ClientError):
        storage.put("k", b"x", "image/jpeg")
    assert storage._direct_put


@pytest.mark.parametrize("refusal", [_error(400, "RequestTimeout"), _error(409, "OperationAborted"),
                                     _error(404, "NoSuchBucket"), _error(503, "SlowDown"), (429, b"")])
def test_a_refusal_that_says_nothing_about_the_direct_put_keeps_it(refusal):
    storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": "http://minio:9000"}))
    sent = _answering(storage, [refusal, 200])
    storage.put("k", b"x", "image/jpeg")
    assert len(sent) == 2 and storage._direct_put


def test_a_redirect_of_the_direct_put_that_the_client_follows_turns_it_off():
    storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": "http://minio:9000"}))
    _answering(storage, [_error(301, "PermanentRedirect"), 200])
    storage.put("k", b"x", "image/jpeg")
    assert not storage._direct_put


def test_a_direct_put_that_gets_no_answer_in_time_is_storage_unavailable_without_a_second_wait():
    from botocore.exceptions import ReadTimeoutError

    storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": "http://minio:9000"}))
    sent = _answering(storage, [ReadTimeoutError(endpoint_url="http://minio:9000/resizer/k")])
    with pytest.raises(StorageUnavailable) as err:
        storage.put("k", b"x", "image/jpeg")
    assert not err.value.permanent and len(sent) == 1 and storage._direct_put


@pytest.mark.parametrize("body,metadata", [(b"x" * (SMALL_BODY + 1), None), ("stream", None),
                                           (b"x", {"note": "caf\u00e9"})])
def test_large_streamed_or_non_ascii_puts_go_through_the_client_alone(body, metadata):
    """A large body waits for 100 Continue (the client's Expect), a stream could not be sent twice, and the
    client refuses what S3 metadata cannot carry: none of them is tried directly first."""
    import io

    storage = Storage(Settings.from_env({"S3_ENDPOINT_URL": "http://minio:9000"}))
    sent = _answering(storage, [])
    data = io.BytesIO(b"x" * 3000) if body == "stream" else body
    try:
        storage.put("k", data, "image/jpeg", None, metadata)
    except Exception:  # the client's own verdict on non-ASCII metadata
        assert metadata
    assert all("amz-sdk-request" in r.headers for r in sent)
    if body != "stream" and not metadata:
        assert sent[0].headers["Expect"] == b"100-continue"


def test_an_empty_body_is_sent_without_waiting_for_100_continue(s3):
    sent = []
    s3.client.meta.events.register("before-send.s3.PutObject", lambda request, **_: sent.append(request.headers))
    s3.put("empty", b"", "image/jpeg")
    assert "Expect" not in sent[0] and s3.get("empty") == b""


def test_puts_go_through_the_client_without_an_explicit_endpoint_or_static_keys(s3):
    assert not s3._direct_put  # AWS itself: the client's endpoint rules decide where a request goes
    keyless = Storage(Settings.from_env({"S3_ENDPOINT_URL": "http://minio:9000"}, s3_access_key_id="",
                                        s3_secret_access_key=""))
    assert not keyless._direct_put


def test_unreachable_storage_is_a_retryable_error():
    settings = Settings.from_env({"S3_ENDPOINT_URL": "http://127.0.0.1:9"})
    storage = Storage(settings, connect_timeout=0.2, read_timeout=0.2)
    with pytest.raises(StorageUnavailable) as err:
        storage.put("k", b"x", "image/jpeg")
    assert not err.value.permanent and err.value.status == 503
    with pytest.raises(StorageUnavailable):
        storage.ping()


def test_key_layout_is_deterministic():
    token = "1d0f5c3e-8a41-4b7e-9d2c-5f6a7b8c9d0e"
    assert original_key(token) == f"originals/{token}"
    assert output_key("public", token, "thumb", "webp") == f"outputs/public/1d/{token}/thumb.webp"
    assert manifest_key("public", token) == f"outputs/public/1d/{token}/manifest.json"
    assert legacy_output_prefix("public", token) == f"outputs/public/{token}/"


def test_outputs_fan_out_so_no_folder_holds_an_entry_per_job():
    """A store that keeps folders on a file system (rclone, MinIO on one drive) pays per entry of the folder it
    writes into: jobs' outputs spread over 256 folders under their owner's prefix, never one folder for all."""
    tokens = [str(uuid.uuid4()) for _ in range(5000)]
    folders = Counter(output_prefix("acme", token).rsplit("/", 2)[0] for token in tokens)
    assert all(folder.startswith("outputs/acme/") for folder in folders)
    assert len(folders) == 256 and max(folders.values()) < 60


def test_delete_many_removes_keys_and_ignores_missing_ones(s3):
    for key in ("originals/a", "originals/b", "outputs/keep"):
        s3.put(key, b"x", "image/png")
    s3.delete_many(["originals/a", "originals/b", "originals/never-existed"])
    assert s3.get("originals/a") is None and s3.get("originals/b") is None
    assert s3.get("outputs/keep") == b"x"


def test_reaper_deletes_in_batches_and_keeps_keys_while_storage_is_down(s3, monkeypatch):
    from resizer import reaper as reaper_module

    monkeypatch.setattr(reaper_module, "MAX_BATCH", 2)
    calls = []
    real = s3.delete_many
    monkeypatch.setattr(s3, "delete_many", lambda keys: (calls.append(list(keys)), real(keys)))
    reaper = reaper_module.Reaper(s3, background=False)  # flushed by hand here
    for n in range(5):
        s3.put(f"originals/{n}", b"x", "image/png")
        reaper.add(f"originals/{n}")
    reaper.flush()
    assert calls == [["originals/0", "originals/1"], ["originals/2", "originals/3"], ["originals/4"]]
    assert all(s3.get(f"originals/{n}") is None for n in range(5)) and reaper.pending() == 0

    def down(keys):
        raise StorageUnavailable("Object storage is unreachable (test).")
    monkeypatch.setattr(s3, "delete_many", down)
    s3.put("originals/later", b"x", "image/png")
    reaper.add("originals/later")
    reaper.flush()  # logs, keeps the key for the next round
    assert reaper.pending() == 1
    monkeypatch.setattr(s3, "delete_many", real)
    reaper.flush()
    assert reaper.pending() == 0 and s3.get("originals/later") is None
