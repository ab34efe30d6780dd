"""API keys, tenant isolation, rate limits, CORS and HTTP hygiene."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace

import pytest
from rq.job import Job

from resizer.app import create_app
from resizer.security import hash_key, main as keys_cli
from settings import Settings, SettingsError
from tests.conftest import ORIGINAL_PNG_B64, Api, image_bytes, start_stack

ACME, BETA = "acme-secret-key-1", "beta-secret-key-2"


@pytest.fixture
def keyed(settings, s3, fake_redis):
    s = replace(settings, api_keys=f"acme:{hash_key(ACME)},beta:{hash_key(BETA)}")
    return create_app(s, redis_client=fake_redis, storage=s3).test_client()


def submit(client, key=None, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post("/api/v1/resize", data=json.dumps({"imageData": ORIGINAL_PNG_B64}),
                       content_type="application/json", headers=headers, **kw)


@pytest.mark.parametrize("header", [None, "Bearer ", "Basic YWJjOmRlZg==", "Bearer wrong-key", f"bearer{ACME}"])
def test_missing_or_wrong_key_is_401(keyed, header):
    r = keyed.post("/api/v1/resize", data="{}", content_type="application/json",
                   headers={"Authorization": header} if header else {})
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_key_is_401(settings, s3, fake_redis):
    app = create_app(replace(settings, api_keys=f"acme:{hash_key(ACME)}"), redis_client=fake_redis, storage=s3)
    assert submit(app.test_client(), BETA).status_code == 401  # beta's entry was removed


def test_a_job_belongs_to_the_key_that_made_it(keyed, fake_redis):
    r = submit(keyed, ACME)
    assert r.status_code == 202
    token = r.get_json()["token"]
    job = Job.fetch(token, connection=fake_redis)
    assert job.args[1] == "acme" and job.meta["tenant"] == "acme"  # outputs go under outputs/acme/
    assert keyed.get(f"/api/v1/resize/{token}", headers={"Authorization": f"Bearer {ACME}"}).status_code == 200
    other = keyed.get(f"/api/v1/resize/{token}", headers={"Authorization": f"Bearer {BETA}"})
    assert other.status_code == 404 and other.get_json()["error"]["code"] == "not_found"  # not 403: no probing
    assert keyed.get(f"/api/v1/resize/{token}").status_code == 401


def test_idempotency_keys_are_per_tenant(keyed):
    h = {"Idempotency-Key": "same"}
    first = keyed.post("/api/v1/resize", data=json.dumps({"imageData": ORIGINAL_PNG_B64}),
                       content_type="application/json", headers={**h, "Authorization": f"Bearer {ACME}"})
    second = keyed.post("/api/v1/resize", data=json.dumps({"imageData": ORIGINAL_PNG_B64}),
                        content_type="application/json", headers={**h, "Authorization": f"Bearer {BETA}"})
    assert first.get_json()["token"] != second.get_json()["token"]


def test_public_endpoints_need_no_key(keyed):
    for path in ("/healthz", "/api/v1/openapi.json"):
        assert keyed.get(path).status_code == 200
    with keyed.get("/docs") as r:
        assert r.status_code == 200


def test_key_configuration_is_validated_at_start():
    with pytest.raises(SettingsError, match="API_KEYS"):
        Settings.from_env({"API_KEYS": "acme:not-a-hash"})
    with pytest.raises(SettingsError, match="API_KEYS"):
        Settings.from_env({"API_KEYS": "Bad Tenant:" + "a" * 64})


def test_keys_file(tmp_path):
    f = tmp_path / "keys"
    f.write_text(f"# tenants\nacme {hash_key(ACME)}\nbeta:{hash_key(BETA)}\n")
    assert Settings.from_env({"API_KEYS_FILE": str(f)}).api_key_hashes() == {hash_key(ACME): "acme",
                                                                              hash_key(BETA): "beta"}
    with pytest.raises(SettingsError, match="does not exist"):
        Settings.from_env({"API_KEYS_FILE": str(tmp_path / "missing")})


def test_key_generator(capsys):
    assert keys_cli(["new", "acme"]) == 0
    out = capsys.readouterr().out
    key = out.split("\n")[1].strip()
    assert f"acme:{hash_key(key)}" in out and len(key) >= 40


def test_production_needs_rate_limits_by_default():
    env = {"APP_ENV": "production", "REDIS_URL": "redis://r:6379/0", "S3_ENDPOINT_URL": "http://m:9000", "S3_BUCKET": "b1b",
           "S3_ACCESS_KEY_ID": "svc", "S3_SECRET_ACCESS_KEY": "long-secret", "API_KEYS": "acme:" + "0" * 64}
    s = Settings.from_env(env)
    assert s.rate_limit_per_key and s.rate_limit_per_ip
    with pytest.raises(SettingsError, match="RATE_LIMIT_PER_IP"):
        Settings.from_env({**env, "RATE_LIMIT_PER_IP": "lots"})


def test_cors_is_off_unless_configured(settings, s3, fake_redis, client):
    assert "Access-Control-Allow-Origin" not in client.get("/healthz", headers={"Origin": "https://x.test"}).headers
    app = create_app(replace(settings, cors_origins="https://app.example.com"), redis_client=fake_redis, storage=s3)
    c = app.test_client()
    r = c.get("/healthz", headers={"Origin": "https://app.example.com"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Access-Control-Allow-Origin" not in c.get("/healthz", headers={"Origin": "https://evil.test"}).headers


@pytest.mark.e2e
def test_rate_limit_gives_429_with_retry_after_and_resets(tmp_path):
    stack = start_stack(tmp_path, workers=1, RATE_LIMIT_PER_IP="4/2second")
    try:
        api = Api(f"http://127.0.0.1:{stack.port}", stack)
        body = {"imageData": base64.b64encode(image_bytes()).decode()}
        codes = [api.post(body).status_code for _ in range(4)]
        assert codes == [202] * 4
        limited = api.post(body)
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
        retry = int(limited.headers["Retry-After"])
        assert 0 < retry <= 2
        assert api.http.get(f"{api.base}/healthz").status_code == 200  # not limited
        # It resets: within the 2 s window (Retry-After is whole seconds, so poll a little past it).
        time.sleep(retry)
        deadline = time.monotonic() + 2.5
        while (again := api.post(body)).status_code == 429 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert again.status_code == 202
    finally:
        stack.stop()


@pytest.mark.e2e
def test_no_server_version_banner(api):
    r = api.http.get(f"{api.base}/healthz")
    assert "gunicorn" not in r.headers.get("Server", "").lower()
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Referrer-Policy"] == "no-referrer"
