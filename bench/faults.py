"""Mixed-fault run: a careful client submits jobs while every part of the stack is broken in turn.

    python bench/faults.py [--jobs 1500] [--clients 8]

The client sends each job with an Idempotency-Key and retries on 503 or a
dropped connection (as the README advises).  Meanwhile, at fixed points of the
run: Redis is SIGKILLed and restarted from its append-only file, storage
(rclone) is frozen (SIGSTOP) for 8 s, both workers are SIGKILLed, one API
process is SIGKILLed, and finally Redis is SIGKILLed and restarted *empty*.
At the end every token that was answered 202 must end SUCCESS or FAILURE:
the run prints how many ended, failed and were lost (404, or never ended).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.images import jpeg, png  # noqa: E402
from bench.load import await_endings, unique_json  # noqa: E402
from resizer.local import Stack, free_port, port_open, wait_for  # noqa: E402


def children(pid: int) -> list[int]:
    try:
        return [int(c) for t in os.listdir(f"/proc/{pid}/task")
                for c in open(f"/proc/{pid}/task/{t}/children").read().split()]
    except FileNotFoundError:
        return []


class Faults:
    """The schedule of faults, run in a thread; each is logged with its time."""

    def __init__(self, stack: Stack, log):
        self.stack, self.log, self.done = stack, log, []
        self.finished, self.stop = threading.Event(), threading.Event()

    def restart_redis(self, empty: bool) -> None:
        self.stack.kill("redis", signal.SIGKILL)
        self.stack.procs["redis"].popen.wait(10)
        if empty:
            shutil.rmtree(self.stack.workdir / "redis")
            (self.stack.workdir / "redis").mkdir()
        time.sleep(1.0)  # down for a second: clients see 503s
        self.stack.spawn(self.stack.procs["redis"])
        wait_for(lambda: port_open("127.0.0.1", self.stack.redis_port), "redis after the crash")

    def freeze_storage(self, seconds: float) -> None:
        pid = self.stack.procs["s3"].pid
        os.kill(pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(pid, signal.SIGCONT)

    def kill_workers(self) -> None:
        for name in [n for n in self.stack.procs if n.startswith("worker-")]:
            self.stack.kill(name, signal.SIGKILL)

    def kill_api_process(self) -> None:
        workers = children(self.stack.procs["api"].pid)
        if workers:
            os.kill(workers[0], signal.SIGKILL)  # gunicorn's master starts another

    def run(self, at: list[tuple[float, str, callable]]) -> None:
        start = time.monotonic()
        for when, what, fault in at:
            time.sleep(max(0.0, when - (time.monotonic() - start)))
            self.log(f"t={time.monotonic() - start:5.1f}s  {what}")
            fault()
            self.done.append(what)
        self.finished.set()
        # Stay alive: a process started from this thread gets SIGTERM when the thread ends
        # (PR_SET_PDEATHSIG follows the thread that forked it), so the restarted Redis lives on.
        self.stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--identical", action="store_true", help="submit the same three images again and again")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="faults-"))
    for key in ("S3_ENDPOINT_URL", "REDIS_URL"):
        os.environ.pop(key, None)
    env = {"APP_ENV": "testing", "LOG_LEVEL": "WARNING", "ACCESS_LOG": "0", "S3_BUCKET": "resizer-faults",
           "RECONCILE_INTERVAL": "5", "RECONCILE_GRACE": "10", "MAINTENANCE_INTERVAL": "5"}
    stack = Stack(workdir=tmp / "var", port=free_port(), s3_port=free_port(), dashboard_port=None, workers=2,
                  env=env, log_dir=tmp / "logs", own_redis=True).start()
    stack.run_supervisor(interval=0.2)
    base = f"http://127.0.0.1:{stack.port}"
    images = [png(1, 1), jpeg(320, 240, quality=85, seed=1), jpeg(1024, 768, quality=85, seed=2)]
    # Unique uploads by default (random bytes after the image's end): with --identical, the same three
    # images again and again, so reuse of identical work and its followers are broken too.
    if args.identical:
        bodies = [lambda b=json.dumps({"imageData": base64.b64encode(d).decode(), "width": 64}).encode(): b
                  for d in images]
    else:
        bodies = [unique_json(d, {"width": 64}) for d in images]
    local = threading.local()
    tokens: list[str] = []
    gave_up = 0
    lock = threading.Lock()

    def session() -> requests.Session:
        if not hasattr(local, "s"):
            local.s = requests.Session()
        return local.s

    def submit(i: int) -> None:
        nonlocal gave_up
        key = str(uuid.uuid4())
        body = bodies[i % len(bodies)]()
        for attempt in range(120):  # a careful client: same key, retry on 503 / connection errors
            try:
                r = session().post(f"{base}/api/v1/resize", data=body, timeout=15,
                                   headers={"Content-Type": "application/json", "Idempotency-Key": key})
            except requests.RequestException:
                local.s = requests.Session()
                time.sleep(0.25)
                continue
            if r.status_code == 202:
                with lock:
                    tokens.append(r.json()["token"])
                return
            if r.status_code in (502, 503):
                time.sleep(min(2.0, 0.1 * (attempt + 1)))
                continue
            raise SystemExit(f"unexpected answer {r.status_code}: {r.text}")
        with lock:
            gave_up += 1

    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        tqdm.write(line)

    faults = Faults(stack, log)
    schedule = [
        (3, "Redis SIGKILLed, restarted from its append-only file", lambda: faults.restart_redis(empty=False)),
        (8, "storage frozen (SIGSTOP) for 8 s", lambda: faults.freeze_storage(8)),
        (20, "both workers SIGKILLed", faults.kill_workers),
        (23, "one API process SIGKILLed", faults.kill_api_process),
        (27, "Redis SIGKILLed, restarted empty", lambda: faults.restart_redis(empty=True)),
    ]
    injector = threading.Thread(target=faults.run, args=(schedule,), daemon=True)
    lost: dict[str, str] = {}
    started = time.monotonic()
    try:
        injector.start()
        with ThreadPoolExecutor(args.clients) as pool:
            list(tqdm(pool.map(submit, range(args.jobs)), total=args.jobs, desc="submitting under faults"))
        faults.finished.wait()
        ended, found_lost = await_endings(
            lambda token: session().get(f"{base}/api/v1/resize/{token}?wait=0", timeout=15), tokens, 900,
            "waiting for every accepted job")
        lost.update(found_lost)
        result = {
            "jobs": args.jobs, "accepted": len(tokens), "client_gave_up": gave_up,
            "succeeded": sum(1 for s in ended.values() if s == "SUCCESS"),
            "failed": sum(1 for s in ended.values() if s == "FAILURE"),
            "lost": len(lost), "lost_tokens": dict(sorted(lost.items())[:20]), "faults": lines,
            "seconds": round(time.monotonic() - started, 1),
        }
        print(json.dumps(result, indent=1))
        if lost:
            print(f"logs kept in {tmp / 'logs'}")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"faults-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(result, indent=1))
        return 0 if not lost and not gave_up else 1
    finally:
        stack.stop()
        faults.stop.set()
        if not lost:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
