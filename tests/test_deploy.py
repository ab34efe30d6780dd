"""Static checks of docker-compose.yml, the Dockerfile and minio/ (no Docker engine here)."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from settings import Settings, _REQUIRED_IN_PRODUCTION

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SETTINGS_VARS = {f.name.upper() for f in dataclasses.fields(Settings)} | {"APP_ENV"}
# Read by gunicorn.conf.py, rq-dashboard or MinIO rather than settings.py.
OTHER_VARS = {"PORT", "BIND_HOST", "WEB_CONCURRENCY", "WEB_THREADS", "ACCESS_LOG", "PROMETHEUS_MULTIPROC_DIR",
              "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MINIO_ENDPOINT", "RQ_DASHBOARD_USERNAME",
              "RQ_DASHBOARD_PASSWORD", "TLS_HOSTNAME",
              "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}  # read by glibc
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
    assert images == {"resizer:local"} and all(SERVICES[s]["build"] == "." for s in APP_SERVICES)


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


def test_the_api_lets_a_waiting_request_end_when_it_is_stopped(monkeypatch, tmp_path):
    """A POST ?wait= has queued its job when it waits: a stop must not cut it off before its answer."""
    from resizer.jobs import MAX_WAIT

    # Read in this process, the file sets PROMETHEUS_MULTIPROC_DIR in os.environ (a folder it makes in /tmp when
    # none is given): every stack a later test started inherited that folder, and nothing ever removed it.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    namespace: dict = {}
    exec((ROOT / "gunicorn.conf.py").read_text(), namespace)
    grace = int(SERVICES["api"]["stop_grace_period"].rstrip("s"))
    assert grace > namespace["graceful_timeout"] > MAX_WAIT


def test_the_api_keeps_its_metric_files_in_one_fixed_folder_and_the_other_services_keep_the_shared_env():
    """gunicorn.conf.py empties a given folder at each start; one it makes for itself in /tmp is removed only on a
    clean stop, and a container's /tmp outlives a restart after a SIGKILL: one folder more per crash."""
    api_env = SERVICES["api"]["environment"]
    assert api_env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    shared = COMPOSE["x-app"]["environment"]
    assert {k: api_env[k] for k in shared} == shared  # the merge kept every shared variable
    for name in ("worker", "webhooks", "rq-dashboard"):  # the API's alone: nothing else serves its metric files
        assert "PROMETHEUS_MULTIPROC_DIR" not in SERVICES[name].get("environment", {}), name


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
    # MinIO rejects a rule whose only action is AbortIncompleteMultipartUpload (minio#15681), failing
    # the whole import, or drops that action (minio#19115); it purges stale multipart uploads itself.
    assert all(set(r) == {"ID", "Status", "Filter", "Expiration"} for r in lifecycle["Rules"])
    assert "mc anonymous set none" in script  # private bucket
    assert SERVICES["minio-init"]["entrypoint"] == ["/bin/sh", "/setup/setup.sh"]


def test_env_example_has_no_real_secrets():
    for key, value in env_example().items():
        if any(word in key for word in ("SECRET", "PASSWORD")):
            assert "change-me" in value, key


# -- images: pinned, and pullable on a fresh host ------------------------------------------------
# Repositories deleted from their registry: a compose file that names one stops at the pull.
GONE = {
    "docker.io/minio/minio": "deleted from Docker Hub in Sept 2026 (quay.io/minio/minio still serves it)",
    "docker.io/minio/mc": "deleted from Docker Hub in Sept 2026 (quay.io/minio/mc still serves it)",
}
# A release: at least major.minor (`7-alpine` moves across minor releases), or MinIO's RELEASE.<time>.
RELEASE_TAG = re.compile(r"^v?\d+\.\d+|^RELEASE\.\d{4}-\d{2}-\d{2}T")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def image_problems(ref: str) -> list[str]:
    """What stops `ref` from being pulled today as the same bytes; empty when it is pinned and served."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    repo = name[: len(name) - len(tag) - 1] if tag else name
    first, _, rest = repo.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:  # no registry named: Docker Hub
        registry, path = "docker.io", repo
    registry = "docker.io" if registry in ("index.docker.io", "registry-1.docker.io") else registry
    if registry == "docker.io" and "/" not in path:
        path = "library/" + path
    problems = []
    if f"{registry}/{path}" in GONE:
        problems.append(f"{ref}: {registry}/{path} was {GONE[f'{registry}/{path}']}")
    if tag == "latest":
        problems.append(f"{ref}: `latest` is not a release")
    if digest:
        if not DIGEST.match(digest):
            problems.append(f"{ref}: malformed digest")
    elif not tag:
        problems.append(f"{ref}: no tag (means `latest`)")
    elif tag != "latest" and not RELEASE_TAG.match(tag):
        problems.append(f"{ref}: tag {tag!r} names no release (major.minor at least)")
    return problems


def dockerfile_images() -> list[str]:
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", DOCKERFILE, re.M | re.I))
    return [image for image in re.findall(r"^FROM (\S+)", DOCKERFILE, re.M) if image not in stages]


def test_every_pulled_image_is_pinned_to_a_release_from_a_live_repository():
    pulled = {name: s["image"] for name, s in SERVICES.items() if "build" not in s}
    assert set(pulled) == {"redis", "minio", "minio-init", "certs", "nginx"}
    problems = [p for image in [*pulled.values(), *dockerfile_images()] for p in image_problems(image)]
    assert not problems, "\n".join(problems)
    assert dockerfile_images() == ["python:3.11.17-slim-trixie"] * 2  # both stages on one base
    # MinIO is archived: only a digest guarantees the bytes that were checked (docs/operations.md)
    for name in ("minio", "minio-init"):
        assert "@sha256:" in SERVICES[name]["image"]


def test_the_built_image_is_never_pulled():
    # Without pull_policy, compose tries to pull `image` before building it.
    for name in APP_SERVICES:
        assert SERVICES[name].get("pull_policy") == "build", name


@pytest.mark.parametrize("ref, expected", [
    # what the compose file had before: each of these stopped or could stop `docker compose up`
    ("minio/minio:latest", ["deleted from Docker Hub", "`latest`"]),
    ("minio/mc:latest", ["deleted from Docker Hub", "`latest`"]),
    ("redis:7-alpine", ["names no release"]),
    ("resizer:latest", ["`latest`"]),
    # the same repositories, spelled out
    ("docker.io/minio/mc:RELEASE.2025-08-13T08-35-41Z", ["deleted from Docker Hub"]),
    ("index.docker.io/minio/minio@sha256:" + "a" * 64, ["deleted from Docker Hub"]),
    ("minio/minio", ["deleted from Docker Hub", "no tag"]),
    ("python", ["no tag"]),
    ("nginx@sha256:1234", ["malformed digest"]),
    # pinned and served
    ("quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z", []),
    ("localhost:5000/minio/minio:RELEASE.2025-09-07T16-13-09Z", []),
    ("nginx:1.30.5-alpine", []),
    ("bitnamisecure/minio@sha256:" + "b" * 64, []),
])
def test_image_check_names_what_is_wrong(ref, expected):
    problems = image_problems(ref)
    assert len(problems) == len(expected), problems
    for problem, words in zip(problems, expected):
        assert words in problem, problems


def test_dockerfile_syntax_directive_is_on_the_first_line():
    # BuildKit reads parser directives only before the first comment or instruction.
    lines = DOCKERFILE.splitlines()
    assert lines[0] == "# syntax=docker/dockerfile:1"
    assert not any(line.startswith("# syntax=") for line in lines[1:])


# -- the one-shot MinIO set-up, run against a recording stand-in for mc ----------------------------
# The mc image (ubi-micro) has a shell and mc but no sed, grep, awk or jq: the script runs here with
# only the stand-in on PATH, so any other command fails as it would there.
MC_STUB = """#!/bin/sh
PATH=/usr/bin:/bin
printf '%s\\n' "$*" >> "$MC_DIR/calls"
case "$*" in
  "ilm rule import "*) cat > "$MC_DIR/lifecycle.json" ;;
  "admin policy create "*) cp "$6" "$MC_DIR/policy.json" ;;
  "admin policy attach "*)
    if [ -n "${MC_ATTACH_ERROR:-}" ]; then echo "$MC_ATTACH_ERROR" >&2; exit 1; fi
    if [ -e "$MC_DIR/attached" ]; then
      echo "mc: <ERROR> Unable to make user/group policy association." \\
           "The specified policy change is already in effect. (Specified policy update has no net effect)." >&2
      exit 1
    fi
    : > "$MC_DIR/attached" ;;
esac
"""
SHELLS = [s for s in ("/bin/sh", "/bin/bash") if Path(s).exists()]  # dash here; the mc image's sh is bash


def run_setup(tmp_path: Path, shell: str, **extra: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "mc").write_text(MC_STUB)
    (bin_dir / "mc").chmod(0o755)
    env = {"PATH": str(bin_dir), "MC_DIR": str(tmp_path), "TMPDIR": str(tmp_path), "MINIO_ROOT_USER": "root",
           "MINIO_ROOT_PASSWORD": "root-password", "S3_BUCKET": "pics", "S3_ACCESS_KEY_ID": "svc",
           "S3_SECRET_ACCESS_KEY": "svc-secret", "RESULT_RETENTION_DAYS": "9", **extra}
    return subprocess.run([shell, str(ROOT / "minio" / "setup.sh")], env=env, capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("shell", SHELLS)
def test_minio_setup_runs_with_mc_alone_and_can_run_again(tmp_path, shell):
    first = run_setup(tmp_path, shell)
    assert first.returncode == 0, first.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    # The commands and flags of mc RELEASE.2025-08-13 (checked against its documentation).
    assert calls == [
        "alias set local http://minio:9000 root root-password",
        "mb --ignore-existing local/pics",
        "anonymous set none local/pics",
        "ilm rule import local/pics",
        f"admin policy create local resizer-service {tmp_path}/resizer-policy.json",
        "admin user add local svc svc-secret",
        "admin policy attach local resizer-service --user svc",
    ]
    lifecycle = json.loads((tmp_path / "lifecycle.json").read_text())
    assert {(r["Filter"]["Prefix"], r["Expiration"]["Days"]) for r in lifecycle["Rules"]} == {("originals/", 1),
                                                                                              ("outputs/", 9)}
    policy = json.loads((tmp_path / "policy.json").read_text())
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    assert resources == {"arn:aws:s3:::pics", "arn:aws:s3:::pics/*"}

    again = run_setup(tmp_path, shell)  # the policy is attached already: mc says so, the set-up goes on
    assert again.returncode == 0, again.stderr
    assert "minio-init: bucket pics ready" in again.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_minio_setup_stops_on_a_real_failure(tmp_path, shell):
    failed = run_setup(tmp_path, shell, MC_ATTACH_ERROR="mc: <ERROR> The specified user does not exist.")
    assert failed.returncode != 0 and "does not exist" in failed.stderr
    assert "ready" not in failed.stdout


def test_external_s3_override_drops_the_bundled_minio():
    class Loader(yaml.SafeLoader):  # compose's merge tags
        pass

    Loader.add_constructor("!override", lambda loader, node: {"!override": loader.construct_mapping(node, deep=True)})
    override = yaml.load((ROOT / "deploy" / "external-s3.yml").read_text(), Loader=Loader)["services"]
    assert set(override) == {*APP_SERVICES, "minio", "minio-init"}
    for name in APP_SERVICES:
        assert override[name]["depends_on"] == {"!override": {"redis": {"condition": "service_healthy"}}}
        env = override[name]["environment"]
        assert set(env) <= SETTINGS_VARS and env["S3_ENDPOINT_URL"].startswith("${S3_ENDPOINT_URL:?")
    assert override["minio"]["profiles"] == override["minio-init"]["profiles"] == ["bundled-s3"]
    assert "deploy/external-s3.yml" in (ROOT / "docs" / "operations.md").read_text()


def test_the_image_compose_and_make_run_tune_glibcs_allocator_alike():
    """The allocator settings measured in the benchmark (make run's stack) are the ones production runs with."""
    from resizer.local import MALLOC, WORKER_MALLOC

    assert dict(re.findall(r"\b(MALLOC_[A-Z_]+)=(\S+)", DOCKERFILE)) == MALLOC  # every process
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    worker_env = services["worker"]["environment"]
    assert {name: str(worker_env.get(name)) for name in WORKER_MALLOC} == WORKER_MALLOC
    assert worker_env["REDIS_URL"] == services["api"]["environment"]["REDIS_URL"]  # the shared settings kept
    assert not set(WORKER_MALLOC) & set(services["api"]["environment"])


def test_every_worker_is_replaced_for_its_memory_before_its_container_is_killed_for_it():
    """A worker leaves after a job that left it above WORKER_MAX_RSS_MB; past its container's limit it would be
    OOM-killed instead (its job waits for another worker to notice). A job's own peak needs room above it."""
    from settings import Settings

    example = dict(re.findall(r"^([A-Z_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.M))
    units = {"m": 1, "g": 1024}
    workers = {name: s for name, s in COMPOSE["services"].items() if "rq_worker.py" in " ".join(s.get("command", []))}
    assert set(workers) == {"worker", "webhooks"}
    for name, service in workers.items():
        limit = service["deploy"]["resources"]["limits"]["memory"]
        limit_mb = int(limit[:-1]) * units[limit[-1]]
        rss_mb = int(service["environment"].get("WORKER_MAX_RSS_MB", example.get("WORKER_MAX_RSS_MB",
                                                                                  Settings.worker_max_rss_mb)))
        assert 0 < rss_mb <= 0.75 * limit_mb, f"{name}: WORKER_MAX_RSS_MB={rss_mb} against a {limit} container"


def test_every_process_of_the_stack_runs_with_those_settings(tmp_path, monkeypatch):
    from resizer import local

    for name in {**local.MALLOC, **local.WORKER_MALLOC}:
        monkeypatch.delenv(name, raising=False)
    stack = local.Stack(workdir=tmp_path, port=0, s3_port=0, dashboard_port=None, workers=2, log_dir=tmp_path)
    spawned = []
    monkeypatch.setattr(stack, "_start_redis", lambda: None)
    monkeypatch.setattr(stack, "_start_s3", lambda: None)
    monkeypatch.setattr(stack, "_check_settings", lambda: None)
    monkeypatch.setattr(stack, "spawn", lambda proc: spawned.append(proc) or stack.procs.setdefault(proc.name, proc))
    monkeypatch.setattr(local, "wait_for", lambda *args, **kwargs: None)  # nothing really starts
    stack.start()
    assert [p.name for p in spawned] == ["worker-1", "worker-2", "webhooks", "api"]
    for proc in spawned:
        expected = {**local.MALLOC, **(local.WORKER_MALLOC if proc.name.startswith("worker-") else {})}
        assert {k: v for k, v in proc.env.items() if k.startswith("MALLOC_")} == expected, proc.name
