"""Static checks of docker-compose.yml, the Dockerfile and minio/ (no Docker engine here)."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path

import yaml

from settings import Settings, _REQUIRED_IN_PRODUCTION

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SETTINGS_VARS = {f.name.upper() for f in dataclasses.fields(Settings)} | {"APP_ENV"}
# Read by gunicorn.conf.py, rq-dashboard or MinIO rather than settings.py.
OTHER_VARS = {"PORT", "BIND_HOST", "WEB_CONCURRENCY", "WEB_THREADS", "ACCESS_LOG", "MINIO_ROOT_USER",
              "MINIO_ROOT_PASSWORD", "MINIO_ENDPOINT", "RQ_DASHBOARD_USERNAME", "RQ_DASHBOARD_PASSWORD", "TLS_HOSTNAME"}
APP_SERVICES = ("api", "worker", "webhooks", "rq-dashboard")


def env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
             if line and not line.startswith("#")]
    return {k: v for k, v in pairs}


def test_compose_has_every_service():
    assert set(SERVICES) == {"redis", "minio", "minio-init", "api", "worker", "webhooks", "rq-dashboard", "certs",
                             "nginx"}
    assert SERVICES["nginx"]["profiles"] == ["tls"] and SERVICES["certs"]["profiles"] == ["tls"]


def test_nginx_profile_proxies_to_the_api_with_tls():
    conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    assert "proxy_pass http://api;" in conf and "server api:5000" in conf
    assert "listen 443 ssl" in conf and "server_tokens off" in conf
    limit_mb = int(re.search(r"client_max_body_size (\d+)m", conf).group(1))
    assert limit_mb * 1024 * 1024 >= int(env_example()["MAX_UPLOAD_BYTES"])
    assert "/etc/nginx/certs/fullchain.pem" in conf and (ROOT / "deploy" / "nginx" / "make-cert.sh").exists()


def test_commands_match_real_entry_points():
    api = SERVICES["api"]["command"]
    assert api == ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    assert (ROOT / "gunicorn.conf.py").exists() and re.search(r"^app = create_app\(\)", (ROOT / "wsgi.py").read_text(), re.M)
    assert SERVICES["worker"]["command"] == ["python", "rq_worker.py"] and (ROOT / "rq_worker.py").exists()
    assert SERVICES["webhooks"]["command"] == ["python", "rq_worker.py", "--queue", "webhooks"]
    assert "webhooks" in (ROOT / "rq_worker.py").read_text()
    assert SERVICES["rq-dashboard"]["command"][0] == "rq-dashboard"
    # the image's default command is the API's
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M).group(1)
    assert json.loads(cmd) == api


def test_api_and_worker_share_one_image():
    images = {SERVICES[s]["image"] for s in APP_SERVICES}
    assert images == {"resizer:latest"} and all(SERVICES[s]["build"] == "." for s in APP_SERVICES)


def test_every_variable_compose_and_env_example_set_is_read_by_something():
    used = set(env_example())
    for name in APP_SERVICES + ("minio", "minio-init", "certs"):
        used |= set(SERVICES[name].get("environment", {}))
    unknown = used - SETTINGS_VARS - OTHER_VARS
    assert not unknown, f"set but read by nothing: {sorted(unknown)}"


def test_every_setting_is_documented_and_required_ones_are_provided():
    documented = set(env_example()) | set(SERVICES["api"]["environment"])
    missing = SETTINGS_VARS - documented
    assert not missing, f"settings missing from .env.example: {sorted(missing)}"
    for name in _REQUIRED_IN_PRODUCTION:
        assert name.upper() in documented
    # the production profile accepts the example's values once the placeholders are filled
    env = {**env_example(), **SERVICES["api"]["environment"]}
    env = {k: v.split(":-", 1)[1].rstrip("}") if v.startswith("${") else v for k, v in env.items()}
    env["API_KEYS"] = "acme:" + "0" * 64  # the one value an operator must add
    assert Settings.from_env(env).app_env == "production"


def test_ports_are_consistent():
    assert "5000:5000" in SERVICES["api"]["ports"] and "ENV" in DOCKERFILE and "PORT=5000" in DOCKERFILE
    assert {"9000:9000", "9001:9001"} <= set(SERVICES["minio"]["ports"])
    assert SERVICES["rq-dashboard"]["ports"] == ["127.0.0.1:9181:9181"]  # internal only
    assert "--port" in SERVICES["rq-dashboard"]["command"]


def test_volumes_are_declared():
    declared = set(COMPOSE["volumes"])
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), source
            else:
                assert source in declared, source


def test_redis_persists_and_dependencies_wait_for_health():
    assert "--appendonly" in SERVICES["redis"]["command"] and "yes" in SERVICES["redis"]["command"]
    for name in APP_SERVICES:
        deps = SERVICES[name]["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["minio-init"]["condition"] == "service_completed_successfully"
    assert SERVICES["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_worker_gets_time_for_a_warm_shutdown():
    grace = int(SERVICES["worker"]["stop_grace_period"].rstrip("s"))
    assert grace > int(env_example()["JOB_TIMEOUT"])
    assert SERVICES["worker"]["restart"] == "unless-stopped" and SERVICES["worker"]["deploy"]["replicas"] >= 2


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck():
    assert len(re.findall(r"^FROM ", DOCKERFILE, re.M)) >= 2
    assert re.search(r"^USER (?!root)", DOCKERFILE, re.M)
    assert "HEALTHCHECK" in DOCKERFILE
    for line in re.findall(r"^COPY (?!--from)(.*)$", DOCKERFILE, re.M):
        *sources, _ = shlex.split(line)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"
    assert "SECRET" not in DOCKERFILE and "PASSWORD" not in DOCKERFILE


def test_minio_setup_files():
    script = (ROOT / "minio" / "setup.sh").read_text()
    for name in ("policy.json", "lifecycle.json"):
        assert name in script and (ROOT / "minio" / name).exists()
    policy = json.loads((ROOT / "minio" / "policy.json").read_text().replace("BUCKET", "resizer"))
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert actions == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"}  # least privilege
    lifecycle = json.loads((ROOT / "minio" / "lifecycle.json").read_text().replace("RETENTION_DAYS", "7"))
    prefixes = {r["Filter"]["Prefix"] for r in lifecycle["Rules"] if "Expiration" in r}
    assert prefixes == {"originals/", "outputs/"}
    assert "mc anonymous set none" in script  # private bucket
    assert SERVICES["minio-init"]["entrypoint"] == ["/bin/sh", "/setup/setup.sh"]


def test_env_example_has_no_real_secrets():
    for key, value in env_example().items():
        if any(word in key for word in ("SECRET", "PASSWORD")):
            assert "change-me" in value, key
