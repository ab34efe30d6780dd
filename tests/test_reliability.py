"""Nothing lost: killed workers, storage and Redis outages, expired queue records, retries, idempotency.

Each test starts its own stack (private redis-server, rclone, workers, gunicorn)
because it breaks parts of it on purpose.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image
from rq.job import Job, JobStatus

from bench.images import photo
from resizer.connections import make_redis
from resizer.local import BIN, ROOT, free_port, port_open, wait_for
from resizer.storage import Storage, manifest_key, original_key, output_prefix
from settings import Settings
from tests.conftest import CORPUS, Api, dump_logs, image_bytes, start_stack, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def slow_png() -> bytes:
    """A 12 MP noisy PNG: re-encoding it at full size as PNG takes a few seconds of CPU."""
    buf = io.BytesIO()
    photo(4000, 3000).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


SLOW = {"width": 4000, "format": "png"}
TRUNCATED = (CORPUS / "bad" / "truncated_jpeg.jpg").read_bytes()  # passes the header check, fails to decode


@pytest.fixture
def make_stack(tmp_path):
    stacks = []

    def make(workers: int = 2, supervise: bool = True, **env):
        stack = start_stack(tmp_path / f"s{len(stacks)}", workers=workers, **env)
        stacks.append(stack)
        if supervise:
            stack.run_supervisor(interval=0.2)
        return stack, Api(f"http://127.0.0.1:{stack.port}", stack)

    yield make
    for stack in stacks:
        stack.stop()


def clients(stack):
    settings = Settings.from_env(stack.env)
    return settings, make_redis(settings), Storage(settings)


def objects(storage: Storage, prefix: str) -> list[str]:
    listing = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def eventually_empty(storage: Storage, prefix: str, within: float = 10) -> list[str]:
    """Originals are deleted in batches about once a second: wait for that, up to a bound."""
    wait_until(lambda: not objects(storage, prefix), f"no objects under {prefix}", within, interval=0.2)
    return objects(storage, prefix)


def is_ready(api: Api) -> bool:
    return api.http.get(f"{api.base}/readyz").status_code == 200


def webhook_delivered(redis, token: str) -> bool:
    """The delivery job has finished: no attempt of it is left to run."""
    return Job.fetch(f"webhook-{token}", connection=redis).get_status() == JobStatus.FINISHED


def kill_worker_running(stack, redis, token: str) -> str:
    """SIGKILL the worker process that is running the job; its stack name is returned."""
    pid = int(Job.fetch(token, connection=redis).worker_name.rsplit(".", 1)[1])  # "<host>.<pid>"
    name = next(name for name, p in stack.procs.items() if p.pid == pid)
    stack.kill(name, signal.SIGKILL)
    return name


def test_sigkilled_worker_job_is_recovered_and_output_exists_once(make_stack, slow_png):
    stack, api = make_stack(workers=2)
    settings, redis, storage = clients(stack)
    token = api.submit(slow_png, **SLOW)
    api.wait_status(token, "IN_PROGRESS")
    proc = kill_worker_running(stack, redis, token)
    killed_at = time.monotonic()
    body = api.wait(token, deadline=150)
    recovery = time.monotonic() - killed_at
    print(f"\nrecovered a SIGKILLed worker's job in {recovery:.1f} s "
          f"(WORKER_DEAD_AFTER={settings.worker_dead_after}, MAINTENANCE_INTERVAL={settings.maintenance_interval})")
    assert body["status"] == "SUCCESS", (body, dump_logs(stack))
    assert recovery < 120
    keys = objects(storage, output_prefix("public", token))
    assert keys == [f"outputs/public/{token[:2]}/{token}/default.png"]  # a success's record rides on its output
    assert eventually_empty(storage, original_key(token)) == []
    # the supervisor replaced the dead worker
    assert stack.procs[proc].alive() and stack.procs[proc].restarts >= 1
    assert Image.open(io.BytesIO(api.download(body["resized_image_url"]).content)).size == (4000, 3000)


def test_a_job_whose_worker_dies_on_its_last_attempt_is_reported(make_stack, slow_png):
    """No retries left and the worker SIGKILLed mid-job: RQ's maintenance ends the job, the client
    still hears of it (webhook), and the failure outlives Redis (manifest)."""
    from resizer.webhooks import sign
    from tests.test_clients import Receiver

    secret = "whsec-reliability"
    stack, api = make_stack(workers=2, JOB_RETRIES="0", WEBHOOK_SECRET=secret, WEBHOOK_ALLOWLIST="127.0.0.1")
    _, redis, storage = clients(stack)
    receiver = Receiver()
    token = api.submit(slow_png, **SLOW, callback_url=receiver.url)
    api.wait_status(token, "IN_PROGRESS")
    kill_worker_running(stack, redis, token)
    (call,) = receiver.wait_for(1, deadline=120)
    payload = json.loads(call["body"])
    assert payload["token"] == token and payload["status"] == "FAILURE", payload
    assert payload["error"]["code"] == "worker_lost"
    assert call["headers"]["X-Resizer-Signature"] == sign(secret, call["headers"]["X-Resizer-Timestamp"], call["body"])
    manifest = json.loads(storage.get(manifest_key("public", token)))
    assert manifest["status"] == "FAILURE" and manifest["error"]["code"] == "worker_lost"
    wait_until(lambda: webhook_delivered(redis, token), "the webhook's delivery job to finish")
    assert len(receiver.calls) == 1


def test_jobs_survive_a_storage_outage(make_stack):
    """Jobs attempted while storage is down fail as storage_unavailable, are scheduled for a retry
    (not ended), and all succeed once storage is back."""
    stack, api = make_stack(workers=1, supervise=False)
    settings, redis, _ = clients(stack)
    assert settings.job_retries >= 2
    # The worker is stopped while the jobs are accepted (the API needs storage for that), so
    # none can run before storage goes down: every first attempt meets the outage.
    stack.stop_proc("worker-1")
    # distinct images: identical submits would share one job (resizer/reuse.py), the others waiting on it
    tokens = [api.submit(image_bytes((300, 200 + i)), width=50) for i in range(3)]
    stack.stop_proc("s3")
    stack.spawn(stack.procs["worker-1"])

    def attempted() -> list[Job] | None:
        jobs = [Job.fetch(t, connection=redis) for t in tokens]
        return jobs if all(j.retries_left is not None and j.retries_left < settings.job_retries for j in jobs) else None

    for job in wait_until(attempted, "every job to fail once against the stopped storage", timeout=60):
        assert job.meta["error"]["code"] == "storage_unavailable", job.meta
        assert job.get_status() in (JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.STARTED), job.get_status()
    retried = int(redis.hget("resizer:metrics:jobs", "retry|storage_unavailable") or 0)
    assert retried >= len(tokens)
    assert not redis.hget("resizer:metrics:jobs", "success|"), "a job succeeded while storage was down"

    stack.spawn(stack.procs["s3"])
    for token in tokens:
        body = api.wait(token, deadline=90)
        assert body["status"] == "SUCCESS", (body, dump_logs(stack))


def test_api_answers_503_fast_while_storage_is_down_and_recovers(make_stack):
    stack, api = make_stack(workers=1)
    stack.stop_proc("s3")
    started = time.monotonic()
    r = api.post({"imageData": base64.b64encode(image_bytes()).decode()})
    elapsed = time.monotonic() - started
    assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"
    assert r.headers["Retry-After"]
    assert elapsed < 5, f"the API took {elapsed:.1f} s to answer while storage was down"
    ready = api.http.get(f"{api.base}/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "ok"
    assert ready.json()["checks"]["storage"].startswith("unreachable")
    stack.spawn(stack.procs["s3"])
    wait_until(lambda: is_ready(api), "/readyz to answer 200 again")
    assert api.wait(api.submit(image_bytes()))["status"] == "SUCCESS"


def test_redis_outage_gives_fast_503s_and_everything_recovers_without_restarts(make_stack):
    stack, api = make_stack(workers=1)
    token = api.submit(image_bytes())
    assert api.wait(token)["status"] == "SUCCESS"
    api_pid, worker_pid = stack.procs["api"].pid, stack.procs["worker-1"].pid
    stack.stop_proc("redis")
    for request in (lambda: api.post({"imageData": base64.b64encode(image_bytes()).decode()}),
                    lambda: api.status(token)):
        started = time.monotonic()
        r = request()
        elapsed = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "service_unavailable" and r.headers["Retry-After"]
        assert elapsed < 3, f"a request hung for {elapsed:.1f} s while Redis was down"
    ready = api.http.get(f"{api.base}/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("unreachable")
    stack.spawn(stack.procs["redis"])
    wait_until(lambda: is_ready(api), "/readyz to answer 200 again")
    # same API and worker processes, working again
    assert api.wait(api.submit(image_bytes()), deadline=60)["status"] == "SUCCESS"
    assert api.status(token).json()["status"] == "SUCCESS"
    assert (stack.procs["api"].pid, stack.procs["worker-1"].pid) == (api_pid, worker_pid)


def test_status_outlives_the_queue_record(make_stack):
    stack, api = make_stack(workers=1)
    _, redis, _ = clients(stack)
    token = api.submit(image_bytes((80, 60)), width=40)
    assert api.wait(token)["status"] == "SUCCESS"
    redis.flushdb()  # as if the RQ result expired, or Redis lost its data
    body = api.status(token).json()
    assert body["status"] == "SUCCESS"
    image = Image.open(io.BytesIO(api.download(body["resized_image_url"]).content))
    assert image.size == (40, 30)
    # a failed job's reason survives too
    bad = api.submit(TRUNCATED)
    assert api.wait(bad)["status"] == "FAILURE"
    redis.flushdb()
    body = api.status(bad).json()
    assert body["status"] == "FAILURE" and body["error"]["code"] == "corrupt_image"


def test_idempotency_key_over_http(make_stack):
    stack, api = make_stack(workers=1)
    _, redis, _ = clients(stack)
    payload = {"imageData": base64.b64encode(image_bytes()).decode(), "width": 20}
    first = api.post(payload, headers={"Idempotency-Key": "abc"})
    second = api.post(payload, headers={"Idempotency-Key": "abc"})
    assert first.status_code == second.status_code == 202
    assert first.json()["token"] == second.json()["token"]
    assert len(redis.keys("rq:job:*")) == 1
    conflict = api.post({**payload, "width": 21}, headers={"Idempotency-Key": "abc"})
    assert conflict.status_code == 422 and conflict.json()["error"]["code"] == "idempotency_key_reused"


def test_job_time_limit_fails_the_job_and_the_worker_keeps_serving(make_stack, slow_png):
    stack, api = make_stack(workers=1, JOB_TIMEOUT=1)
    token = api.submit(slow_png, **SLOW)
    body = api.wait(token, deadline=60)
    assert body["status"] == "FAILURE" and body["error"]["code"] == "processing_timeout", body
    assert stack.procs["worker-1"].restarts == 0 and stack.procs["worker-1"].alive()
    assert api.wait(api.submit(image_bytes()))["status"] == "SUCCESS"


def _children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def _metrics_folders(master_pid: int) -> set:
    """The folders of the metric files the API's workers have mapped (made after exec: not in their environ)."""
    return {Path(line.split()[-1]).parent for pid in _children(master_pid)
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if line.rstrip().endswith(".db")}


def _open_files(pid: str) -> list[str]:
    folder, paths = Path(f"/proc/{pid}/fd"), []
    for fd in os.listdir(folder):
        try:
            paths.append(os.readlink(folder / fd))
        except FileNotFoundError:  # closed meanwhile (a socket of another thread)
            pass
    return paths


def test_the_api_workers_touch_their_liveness_file_in_memory_not_on_disk(make_stack):
    """gunicorn's workers touch a file (os.utime) at every turn of their loop to show the master they are alive:
    hundreds of times a second under load. In the default temporary folder, on the disk where Redis's AOF is
    fsynced at every write, each touch went into the journal those fsyncs commit: in memory, 1x1 jobs ran 7-13%
    faster."""
    stack, api = make_stack(workers=1, supervise=False)
    assert api.status(str(uuid.uuid4())).status_code == 404  # a worker has served: its loop is running
    workers = _children(stack.procs["api"].pid)
    assert workers
    for pid in workers:
        # The file is unlinked once opened: "/dev/shm/wgunicorn-XXXX (deleted)".
        (liveness,) = [path for path in _open_files(pid) if Path(path).name.startswith("wgunicorn-")]
        assert Path(liveness).parent == Path("/dev/shm"), liveness


def test_the_api_opens_no_control_socket(make_stack):
    """gunicorn 25.1+ opens a control socket for runtime management (gunicornc) in $HOME/.gunicorn by default:
    one path for every server of the user on the host, in a folder the image's user cannot create. Not used here."""
    stack, api = make_stack(workers=1, supervise=False)
    assert api.status(str(uuid.uuid4())).status_code == 404  # up and serving
    master = stack.procs["api"].pid
    sockets = {path.removeprefix("socket:[").rstrip("]") for path in _open_files(str(master)) if path.startswith("socket:")}
    unix = {line.split()[6]: line.split()[7] for line in Path(f"/proc/{master}/net/unix").read_text().splitlines()[1:]
            if len(line.split()) > 7}
    assert sockets  # the master's sockets were read (its listener at least)
    assert not [unix[inode] for inode in sockets if unix.get(inode, "").endswith(".ctl")]


def test_the_api_removes_the_metrics_folder_it_made_when_it_stops(make_stack, tmp_path):
    """gunicorn.conf.py makes a folder for prometheus-client's per-process files when none is given: it was left
    behind in /tmp at every stop (133 of them after a day of tests and benchmarks)."""
    stack, api = make_stack(workers=1, supervise=False)
    port = free_port()
    env = {k: v for k, v in stack.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}  # gunicorn as compose runs it
    env.update(PORT=str(port), BIND_HOST="127.0.0.1")
    with open(tmp_path / "api.log", "w") as log:
        master = subprocess.Popen([str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"], env=env,
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        other = Api(f"http://127.0.0.1:{port}", stack)
        wait_for(lambda: port_open("127.0.0.1", port) or master.poll() is not None, "the second API", timeout=60)
        wait_until(lambda: other.http.get(f"{other.base}/healthz").status_code == 200, "its workers", 60)
        assert other.status(str(uuid.uuid4())).status_code == 404  # a request: the metrics are written
        (folder,) = _metrics_folders(master.pid)
        assert folder.name.startswith("resizer-metrics-")
        assert str(folder).startswith(os.path.realpath(tempfile.gettempdir()))
        assert folder.is_dir() and any(folder.iterdir())
    finally:
        master.terminate()
        try:
            master.wait(timeout=30)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
    assert not folder.exists(), (tmp_path / "api.log").read_text()


def test_the_local_apis_metrics_folder_is_in_its_workdir_so_a_killed_master_leaves_nothing_in_tmp(make_stack):
    """A gunicorn master SIGKILLed (a stop past its timeout, a killed runner) cannot remove the folder it made:
    the benchmark and the tests left /tmp/resizer-metrics-* behind. The local stack gives it one in its workdir,
    emptied at every start, whatever the environment says (a folder set there would be shared by every stack)."""
    stack, api = make_stack(workers=1, supervise=False, PROMETHEUS_MULTIPROC_DIR="/tmp/inherited-by-every-stack")
    assert api.status(str(uuid.uuid4())).status_code == 404  # a request: the metrics are written
    (folder,) = _metrics_folders(stack.procs["api"].pid)
    assert folder == stack.workdir.resolve() / "metrics" and any(folder.iterdir())
    stale = folder / "counter_999999.db"
    stale.write_bytes(b"")  # a file of a process that died with a killed master
    workers = _children(stack.procs["api"].pid)
    stack.kill("api")
    stack.procs["api"].popen.wait(timeout=10)
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), "its workers gone", 30)
    stack.spawn(stack.procs["api"])

    def answers() -> bool:
        try:
            return api.status(str(uuid.uuid4())).status_code == 404
        except OSError:  # requests' ConnectionError is one: refused until the new master listens
            return False

    wait_until(answers, "the API back", 60, interval=0.2)
    assert folder.is_dir() and not stale.exists()  # emptied at the start, not left to pile up


def test_sigterm_is_a_warm_shutdown(make_stack, slow_png):
    stack, api = make_stack(workers=1, supervise=False)
    token = api.submit(slow_png, **SLOW)
    api.wait_status(token, "IN_PROGRESS")
    stack.procs["worker-1"].popen.send_signal(signal.SIGTERM)
    code = stack.procs["worker-1"].popen.wait(timeout=60)
    assert code == 0
    assert api.status(token).json()["status"] == "SUCCESS"  # finished before the worker exited
    # and its original was deleted on the way out, not left for the lifecycle rule
    _, _, storage = clients(stack)
    assert objects(storage, "originals/") == []


def test_originals_are_removed_when_jobs_end(make_stack):
    stack, api = make_stack(workers=1)
    _, _, storage = clients(stack)
    good = api.submit(image_bytes())
    bad = api.submit(TRUNCATED)
    assert api.wait(good)["status"] == "SUCCESS" and api.wait(bad)["status"] == "FAILURE"
    assert eventually_empty(storage, "originals/") == []


def test_workers_are_recycled_after_max_jobs_without_losing_any(make_stack):
    stack, api = make_stack(workers=1, WORKER_MAX_JOBS=2)
    tokens = [api.submit(image_bytes((120, 90 + i)), width=30) for i in range(5)]  # distinct: each one is work
    for token in tokens:
        assert api.wait(token, deadline=60)["status"] == "SUCCESS"
    assert stack.procs["worker-1"].restarts >= 2  # exited cleanly after 2 jobs, twice, and came back


def test_a_worker_above_its_memory_limit_is_replaced_without_losing_any_job(make_stack):
    stack, api = make_stack(workers=1, WORKER_MAX_RSS_MB=1)  # any real process holds more: it leaves after each job
    tokens = [api.submit(image_bytes((120, 90 + i)), width=30) for i in range(4)]
    for token in tokens:
        assert api.wait(token, deadline=60)["status"] == "SUCCESS"
    assert stack.procs["worker-1"].restarts >= 3
    assert "more than WORKER_MAX_RSS_MB=1" in (stack.log_dir / "worker-1.log").read_text()
