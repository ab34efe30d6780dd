"""The systems under test, started side by side: ours (``resizer.local.Stack``), the original
design (bench/original: Flask + Celery) and thumbor 7.7.

The peers get their own virtualenvs under var/bench/ (created on first use, reused while their
requirements are unchanged), so nothing of theirs enters the service's requirements.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import requests

from bench.procs import Group
from resizer.local import Stack, free_port, port_open, wait_for

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench"
WORKERS = 2
THUMBOR_REQUIREMENT = "thumbor>=7.7,<7.8"  # the latest 7.7.x
# gunicorn servers of the benchmark (the original's, the floor's) keep their workers' liveness file where ours does
# (gunicorn.conf.py): in memory, not on the disk whose journal Redis's fsyncs commit.
HEARTBEAT_IN_MEMORY = ["--worker-tmp-dir", "/dev/shm"] if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
    else []


def venv(name: str, requirements: list[str], key: str = "") -> Path:
    """A virtualenv under var/bench/, (re)installed only when its requirements change; returns its bin/."""
    path = VAR / name
    stamp = path / f".installed-{hashlib.sha1((chr(10).join(requirements) + key).encode()).hexdigest()[:12]}"
    if not stamp.exists():
        print(f"    installing {' '.join(requirements)} into {path.relative_to(ROOT)} ...", flush=True)
        if not (path / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        run = subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", *requirements], capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"could not install {requirements} into {path}:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
        for old in path.glob(".installed-*"):
            old.unlink()
        stamp.touch()
    return path / "bin"


def start_redis(group: Group, workdir: Path, appendonly: bool = True) -> tuple[int, str]:
    """The private redis-server every system uses (each its own database), configured as ours runs it; with
    ``appendonly=False`` one that keeps nothing on disk (the stack's floor)."""
    port = free_port()
    data = workdir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    group.spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                          "--appendonly", "yes" if appendonly else "no", "--save", ""], dict(os.environ))
    wait_for(lambda: port_open("127.0.0.1", port), "redis-server")
    return group.pid("redis"), f"redis://127.0.0.1:{port}"


class Ours:
    name = "ours"
    modes = ("polling", "long poll", "one request")

    def __init__(self, workdir: Path, redis_url: str, redis_pid: int, workers: int = WORKERS,
                 redis_fsync: str | None = None):
        """``redis_fsync``: run ours on its own Redis with this appendfsync (else on the shared one)."""
        self.redis_pid = redis_pid
        for key in ("S3_ENDPOINT_URL", "S3_PUBLIC_ENDPOINT_URL", "REDIS_URL"):
            os.environ.pop(key, None)
        env = {"APP_ENV": "testing", "ACCESS_LOG": "0", "LOG_LEVEL": "WARNING", "S3_BUCKET": "bench"}
        if not redis_fsync:
            env["REDIS_URL"] = f"{redis_url}/0"
        self.stack = Stack(workdir=workdir / "ours", port=free_port(), s3_port=free_port(), dashboard_port=None,
                           workers=workers, log_dir=workdir / "logs" / "ours", env=env,
                           own_redis=bool(redis_fsync), redis_persistence=redis_fsync or "everysec")
        self.base = f"http://127.0.0.1:{self.stack.port}"

    def start(self) -> "Ours":
        self.stack.start()
        self.stack.run_supervisor(interval=0.2)
        if "redis" in self.stack.procs:
            self.redis_pid = self.stack.procs["redis"].pid
        self.redis_url = self.stack.env["REDIS_URL"]  # its own, or the shared one
        return self

    def stop(self) -> None:
        self.stack.stop()

    def worker_names(self) -> list[str]:
        return sorted(n for n in self.stack.procs if n.startswith("worker-"))

    def roles(self) -> dict[str, list[int]]:
        procs = self.stack.procs
        return {"api": [procs["api"].pid], "workers": [procs[n].pid for n in self.worker_names() + ["webhooks"]],
                "storage": [procs["s3"].pid], "redis": [self.redis_pid]}

    def stop_workers(self) -> None:
        for name in self.worker_names():
            self.stack.procs[name].restart = False  # or the supervisor brings them straight back
            self.stack.stop_proc(name)

    def start_workers(self) -> None:
        for name in self.worker_names():
            proc = self.stack.procs[name]
            proc.restart = True
            self.stack.spawn(proc)


class Original:
    """The original design as it ran: Flask's own server (``app.run``, a thread per connection and a connection per
    request, one process), as the original project's ``app.py`` starts it, and a Celery prefork worker, concurrency 2.

    Its CPU per 1×1 job here (≈ 15 ms in all, the Celery worker ≈ 3) is consistent with what issue 14 measured of
    the original; the same app under gunicorn (``OriginalOnGunicorn``, sharing this worker) costs about half of it.
    """

    name = "original"
    modes = ("polling",)

    def __init__(self, workdir: Path, redis_url: str, redis_pid: int):
        self.redis_pid = redis_pid
        requirements = ROOT / "bench" / "original" / "requirements.txt"
        self.bin = venv("original-venv", ["-r", str(requirements)], key=requirements.read_text())
        self.results = workdir / "original-results"
        self.results.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "ORIGINAL_REDIS_URL": f"{redis_url}/1",
                    "ORIGINAL_RESULTS_DIR": str(self.results), "PYTHONUNBUFFERED": "1"}
        self.group = Group(workdir / "logs" / "original")
        self.version = "celery " + subprocess.run([str(self.bin / "celery"), "--version"], capture_output=True,
                                                  text=True).stdout.split(" ")[0].strip()

    def start(self) -> "Original":
        self.start_workers()
        # Not started from the checkout (nor is the gunicorn beside it): nothing of ours is read by the original.
        self.group.spawn("api", [str(self.bin / "python"), "-m", "bench.original.serve", "--port", str(self.port)],
                         self.env, cwd=self.results)
        wait_for(lambda: port_open("127.0.0.1", self.port), "the original's API", timeout=30)
        return self

    def stop(self) -> None:
        self.group.stop_all()

    def roles(self) -> dict[str, list[int]]:
        return {"api": [self.group.pid("api")], "workers": [self.group.pid("worker")], "storage": [],
                "redis": [self.redis_pid]}

    def stop_workers(self) -> None:
        self.group.stop("worker", timeout=60)

    def start_workers(self) -> None:
        self.group.spawn("worker", [str(self.bin / "celery"), "-A", "bench.original.tasks", "worker", "--pool",
                                    "prefork", "--concurrency", str(WORKERS), "--loglevel", "WARNING"],
                         self.env, cwd=ROOT)


class OriginalOnGunicorn:
    """The original's app under gunicorn (the same 2 processes x 8 threads as ours), on the original's own
    Celery worker and Redis: the original with a production server, the stricter comparison."""

    name = "original-gunicorn"
    modes = ("polling",)

    def __init__(self, original: Original):
        self.original = original
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self) -> "OriginalOnGunicorn":
        o = self.original
        # Not started from the checkout: gunicorn reads ./gunicorn.conf.py when it finds one, and ours (its access
        # log, its hooks, its metrics folder, its 30 s graceful stop) is not the original design's.
        # Its workers' liveness file in memory, as ours (gunicorn's own advice): a production set-up, not a handicap.
        o.group.spawn("api-gunicorn", [str(o.bin / "gunicorn"), "--workers", str(WORKERS), "--threads", "8",
                                       "--worker-class", "gthread", "--bind", f"127.0.0.1:{self.port}",
                                       "--log-level", "warning", *HEARTBEAT_IN_MEMORY, "bench.original.app:api"], o.env,
                      cwd=o.results)
        wait_for(lambda: port_open("127.0.0.1", self.port), "the original's API under gunicorn", timeout=30)
        return self

    def stop(self) -> None:
        self.original.group.stop("api-gunicorn")

    def roles(self) -> dict[str, list[int]]:
        return {**self.original.roles(), "api": [self.original.group.pid("api-gunicorn")]}


class Thumbor:
    """thumbor 7.7: file loader rooted at the generated images, no storage, no result storage, unsafe URLs.

    Two processes share one listening socket: what ``--processes 2`` does by forking, but each is the
    benchmark's own child, so it dies with the benchmark (a forked child would not).
    """

    name = "thumbor"
    modes = ("sync",)

    def __init__(self, workdir: Path, image_dir: Path):
        self.bin = venv("thumbor-venv", [THUMBOR_REQUIREMENT])
        self.conf = workdir / "thumbor.conf"
        self.conf.write_text(f"LOADER = 'thumbor.loaders.file_loader'\nFILE_LOADER_ROOT_PATH = {str(image_dir)!r}\n"
                             "STORAGE = 'thumbor.storages.no_storage'\nRESULT_STORAGE = None\n"
                             "ALLOW_UNSAFE_URL = True\nNON_BLOCKING_SOCKETS = True\n")  # a shared --fd socket
        self.group = Group(workdir / "logs" / "thumbor")
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.version = subprocess.run([str(self.bin / "thumbor"), "--version"], capture_output=True,
                                      text=True).stdout.strip()

    def start(self) -> "Thumbor":
        fd = self.sock.fileno()
        for i in range(1, WORKERS + 1):
            self.group.spawn(f"thumbor-{i}", [str(self.bin / "thumbor"), "--conf", str(self.conf), "--fd", str(fd),
                                              "--log-level", "error"], dict(os.environ), pass_fds=(fd,))
        self.sock.close()  # the servers hold it now

        def ready() -> bool:
            try:
                return requests.get(f"{self.base}/healthcheck", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, "thumbor", timeout=30)  # the load's warm-up reaches the second process
        return self

    def stop(self) -> None:
        self.group.stop_all()

    def roles(self) -> dict[str, list[int]]:
        return {"api": [self.group.pid(f"thumbor-{i}") for i in range(1, WORKERS + 1)], "workers": [], "storage": [],
                "redis": []}
