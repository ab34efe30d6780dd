import pytest

from settings import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY, Settings, SettingsError


def test_defaults_for_development():
    s = Settings.from_env({})
    assert s.app_env == "development"
    assert s.max_upload_bytes == 40 * 1024 * 1024
    assert s.max_input_pixels == 100_000_000
    assert (s.max_output_dimension, s.max_variants, s.max_frames) == (8192, 10, 300)
    assert s.presigned_url_ttl == 900


def test_values_come_from_the_environment():
    s = Settings.from_env({"REDIS_URL": "redis://h:1/2", "QUEUE_NAME": "q1", "S3_BUCKET": "my-bucket",
                           "PRESIGNED_URL_TTL": "60", "MAX_UPLOAD_BYTES": "1_000_000",
                           "S3_PUBLIC_ENDPOINT_URL": "http://public:9000"})
    assert (s.redis_url, s.queue_name, s.s3_bucket, s.presigned_url_ttl) == ("redis://h:1/2", "q1", "my-bucket", 60)
    assert s.max_upload_bytes == 1_000_000
    assert s.presign_endpoint_url == "http://public:9000"


@pytest.mark.parametrize(
    "env, name",
    [
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"PRESIGNED_URL_TTL": "abc"}, "PRESIGNED_URL_TTL"),
        ({"PRESIGNED_URL_TTL": "0"}, "PRESIGNED_URL_TTL"),
        ({"PRESIGNED_URL_TTL": str(8 * 86400)}, "PRESIGNED_URL_TTL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"S3_ENDPOINT_URL": "not a url"}, "S3_ENDPOINT_URL"),
        ({"S3_BUCKET": "A"}, "S3_BUCKET"),
        ({"MAX_OUTPUT_DIMENSION": "-1"}, "MAX_OUTPUT_DIMENSION"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"JOB_TIMEOUT": "1.5"}, "JOB_TIMEOUT"),
    ],
)
def test_a_wrong_value_names_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


PROD = {
    "APP_ENV": "production",
    "REDIS_URL": "redis://redis:6379/0",
    "S3_ENDPOINT_URL": "http://minio:9000",
    "S3_BUCKET": "resizer",
    "S3_ACCESS_KEY_ID": "svc-user",
    "S3_SECRET_ACCESS_KEY": "a-long-random-secret",
    "API_KEYS": "acme:" + "ab" * 32,
}


def test_production_profile_accepts_a_complete_configuration():
    s = Settings.from_env(PROD)
    assert s.app_env == "production" and s.log_format == "json"
    assert Settings.from_env({**PROD, "LOG_FORMAT": "text"}).log_format == "text"


@pytest.mark.parametrize("missing", ["REDIS_URL", "S3_ENDPOINT_URL", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY",
                                     "API_KEYS"])
def test_production_requires_explicit_values(missing):
    env = {k: v for k, v in PROD.items() if k != missing}
    with pytest.raises(SettingsError, match=missing):
        Settings.from_env(env)


@pytest.mark.parametrize("key, secret", [("minioadmin", "minioadmin"), (DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY)])
def test_production_refuses_default_storage_credentials(key, secret):
    with pytest.raises(SettingsError, match="default credentials"):
        Settings.from_env({**PROD, "S3_ACCESS_KEY_ID": key, "S3_SECRET_ACCESS_KEY": secret})


def test_entry_points_exit_with_the_message(tmp_path):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "PRESIGNED_URL_TTL": "soon"}
    r = subprocess.run([sys.executable, "rq_worker.py"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "PRESIGNED_URL_TTL" in r.stderr and "Traceback" not in r.stderr
    gunicorn = str(__import__("pathlib").Path(sys.executable).parent / "gunicorn")
    r = subprocess.run([gunicorn, "-c", "gunicorn.conf.py", "wsgi:app"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "PRESIGNED_URL_TTL" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("drop, word", [("API_KEYS", "API_KEYS"), ("S3_SECRET_ACCESS_KEY", "S3_SECRET_ACCESS_KEY")])
def test_production_processes_refuse_to_start_insecure(drop, word):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", **{k: v for k, v in PROD.items() if k != drop}}
    r = subprocess.run([sys.executable, "rq_worker.py"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and word in r.stderr and "Traceback" not in r.stderr
    env = {"PATH": "/usr/bin:/bin", **PROD, "S3_ACCESS_KEY_ID": "minioadmin", "S3_SECRET_ACCESS_KEY": "minioadmin"}
    r = subprocess.run([sys.executable, "rq_worker.py"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "default credentials" in r.stderr
