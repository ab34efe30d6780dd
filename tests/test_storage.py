"""Storage code paths against moto's in-process S3."""

import pytest
from urllib.parse import parse_qs, urlparse

from resizer.errors import StorageUnavailable
from resizer.storage import Storage, manifest_key, original_key, output_key
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


def test_unreachable_storage_is_a_retryable_error():
    settings = Settings.from_env({"S3_ENDPOINT_URL": "http://127.0.0.1:9"})
    storage = Storage(settings, connect_timeout=0.2, read_timeout=0.2)
    with pytest.raises(StorageUnavailable) as err:
        storage.put("k", b"x", "image/jpeg")
    assert not err.value.permanent and err.value.status == 503
    with pytest.raises(StorageUnavailable):
        storage.ping()


def test_key_layout_is_deterministic():
    assert original_key("t") == "originals/t"
    assert output_key("public", "t", "thumb", "webp") == "outputs/public/t/thumb.webp"
    assert manifest_key("public", "t") == "outputs/public/t/manifest.json"
