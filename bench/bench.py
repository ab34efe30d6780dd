"""The benchmark: one command, the real stack, a table.  `make bench` (or `--smoke` for a quick check).

Phases, each printed as it runs:
  1. kernel    decode+resize+encode only: ours vs naive Pillow (full decode + Lanczos), time and peak memory
  2. ceiling   the same kernel in as many processes as workers: the most the hardware allows
  3. e2e       the whole service (gunicorn, RQ workers, redis-server, rclone serve s3) driven by
               8 concurrent clients that POST and poll until SUCCESS: jobs/s and latency percentiles
  4. post      POST latency of a 2 MB upload while the workers are busy
  5. memory    peak RSS of a worker (incl. a 50 MP JPEG job) and of an API process
  6. soak      thousands of jobs while workers are SIGKILLed at random: lost and duplicated must be 0

Results go to bench/results/<time>.json and .md, and (full runs) docs/performance.md.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.images import jpeg, png  # noqa: E402

WORKERS = 2
CLIENTS = 8


# -- images ------------------------------------------------------------------------
def make_images(smoke: bool) -> dict[str, bytes]:
    sizes = {"1x1 PNG": None, "1024x768 JPEG": (1024, 768), "2 MP JPEG": (1632, 1224), "12 MP JPEG": (4000, 3000),
             "36 MP JPEG": (7200, 5000)}
    if smoke:
        sizes = {"1x1 PNG": None, "1024x768 JPEG": (320, 240), "2 MP JPEG": (400, 300)}
    images = {}
    for name, size in tqdm(sizes.items(), desc="generating images", leave=False):
        images[name] = png(1, 1) if size is None else jpeg(*size, quality=85, seed=len(images) + 1)
    return images


TARGETS = {"100x100": {"width": 100, "height": 100}, "1024 wide": {"width": 1024}}


# -- 1. kernel: ours vs naive ----------------------------------------------------------------
_KERNEL_SNIPPET = r"""
import io, json, resource, sys, time
sys.path.insert(0, {root!r})
from PIL import Image
from resizer.imaging import ImageLimits, process
from resizer.options import Limits, parse_options
data = open({path!r}, "rb").read()
opts = json.loads({opts!r})
spec = parse_options(opts, Limits())
def ours():
    return process(data, spec, ImageLimits())[0].data
def naive():
    im = Image.open(io.BytesIO(data))
    im.load()
    w, h = im.size
    size = (opts["width"], opts.get("height") or max(1, round(h * opts["width"] / w)))
    buf = io.BytesIO()
    im.resize(size, Image.Resampling.LANCZOS).convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()
fn = ours if {which!r} == "ours" else naive
def status(field):  # kB; VmHWM starts fresh at exec, unlike ru_maxrss, which a child inherits from its parent
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
base = status("VmRSS")
fn()
times = []
for _ in range({repeat}):
    t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
peak = status("VmHWM")
print(json.dumps({{"ms": sorted(times)[len(times) // 2] * 1000, "peak_mb": (peak - base) / 1024}}))
"""


def kernel_case(path: Path, opts: dict, which: str, repeat: int) -> dict:
    """One measurement in a fresh process, so peak memory is this case's alone."""
    code = _KERNEL_SNIPPET.format(root=str(ROOT), path=str(path), opts=json.dumps(opts), which=which, repeat=repeat)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def kernel_table(images: dict[str, bytes], tmp: Path, smoke: bool) -> list[dict]:
    rows = []
    names = [n for n in images if "JPEG" in n and ("MP" in n or smoke)]
    cases = [(n, t) for n in names for t in TARGETS]
    for name, target in tqdm(cases, desc="kernel: ours vs naive", leave=False):
        path = tmp / f"{name.replace(' ', '_')}.jpg"
        path.write_bytes(images[name])
        repeat = 3 if smoke else (5 if "36" in name else 9)
        ours = kernel_case(path, TARGETS[target], "ours", repeat)
        naive = kernel_case(path, TARGETS[target], "naive", repeat)
        rows.append({"image": name, "target": target, "ours_ms": ours["ms"], "naive_ms": naive["ms"],
                     "speedup": naive["ms"] / ours["ms"], "ours_peak_mb": ours["peak_mb"],
                     "naive_peak_mb": naive["peak_mb"],
                     "memory_ratio": ours["peak_mb"] / naive["peak_mb"] if naive["peak_mb"] > 0 else None})
    return rows


# -- 2. ceiling: the kernel in WORKERS processes -------------------------------------------
def _ceiling_worker(args):
    data, opts, seconds = args
    from resizer.imaging import ImageLimits, process
    from resizer.options import Limits, parse_options

    spec = parse_options(opts, Limits())
    process(data, spec, ImageLimits())
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        process(data, spec, ImageLimits())
        n += 1
    return n


def ceiling(data: bytes, opts: dict, seconds: float) -> float:
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        counts = pool.map(_ceiling_worker, [(data, opts, seconds)] * WORKERS)
    return sum(counts) / seconds


# -- 3. end to end -----------------------------------------------------------------------------
class Client:
    def __init__(self, base: str):
        self.base = base
        self.local = threading.local()

    @property
    def http(self) -> requests.Session:
        if not hasattr(self.local, "s"):
            self.local.s = requests.Session()
        return self.local.s

    def post(self, body: bytes, opts: dict) -> tuple[str, float]:
        t = time.perf_counter()
        r = self.http.post(f"{self.base}/api/v1/resize", data=body, params=opts,
                           headers={"Content-Type": "image/jpeg"}, timeout=60)
        elapsed = time.perf_counter() - t
        if r.status_code != 202:
            raise RuntimeError(f"POST answered {r.status_code}: {r.text[:200]}")
        return r.json()["token"], elapsed

    def wait(self, token: str, poll: float = 0.0, deadline: float = 120) -> dict:
        """Poll the status; each poll is a long poll (?wait=) that returns as soon as the job ends."""
        end = time.perf_counter() + deadline
        while time.perf_counter() < end:
            body = self.http.get(f"{self.base}/api/v1/resize/{token}", params={"wait": 10}, timeout=60).json()
            if body["status"] in ("SUCCESS", "FAILURE"):
                return body
            time.sleep(poll or 0.05)  # the server answered without waiting (all its waiting slots busy)
        raise RuntimeError(f"job {token} did not finish in {deadline} s")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def e2e(client: Client, data: bytes, opts: dict, jobs: int, desc: str) -> dict:
    latencies, posts, failures = [], [], 0
    bar = tqdm(total=jobs, desc=desc, leave=False)

    def one(_):
        nonlocal failures
        t = time.perf_counter()
        token, post = client.post(data, opts)
        body = client.wait(token)
        latencies.append(time.perf_counter() - t)
        posts.append(post)
        if body["status"] != "SUCCESS":
            failures += 1
        bar.update()

    for _ in range(CLIENTS):  # warm-up
        one(None)
    latencies.clear(), posts.clear()
    bar.reset(total=jobs)
    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(jobs)))
    elapsed = time.perf_counter() - start
    bar.close()
    return {"jobs_per_s": jobs / elapsed, "p50_ms": pct(latencies, 50) * 1000, "p95_ms": pct(latencies, 95) * 1000,
            "p99_ms": pct(latencies, 99) * 1000, "failures": failures, "jobs": jobs}


def post_latency(client: Client, data: bytes, count: int) -> dict:
    """POSTs only (no polling), from CLIENTS threads, while the workers chew on what was queued."""
    times = []
    with ThreadPoolExecutor(CLIENTS) as pool:
        for _, elapsed in tqdm(pool.map(lambda _: client.post(data, {"width": 100}), range(count)), total=count,
                               desc="POST latency (2 MB)", leave=False):
            times.append(elapsed)
    return {"p50_ms": pct(times, 50) * 1000, "p99_ms": pct(times, 99) * 1000, "bytes": len(data), "count": count}


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss(pids: list[int]) -> None:
    """Start VmHWM afresh (Linux: writing 5 to clear_refs), so a phase's own peak can be read."""
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def drain(stack, timeout: float = 300) -> None:
    """Wait until nothing is queued, running or waiting for a retry."""
    from redis import Redis
    from rq import Queue

    queue = Queue("resize", connection=Redis.from_url(stack.env["REDIS_URL"]))
    end = time.time() + timeout
    while time.time() < end:
        if queue.count == 0 and queue.started_job_registry.count == 0 and queue.scheduled_job_registry.count == 0:
            return
        time.sleep(0.2)


# -- 6. soak ----------------------------------------------------------------------------------------
def soak(stack, client: Client, data: bytes, jobs: int, kill_every: tuple[float, float]) -> dict:
    from resizer.storage import Storage
    from settings import Settings

    tokens, accepted = [], 0
    stop = threading.Event()
    kills = 0

    def killer():
        nonlocal kills
        rnd = random.Random(7)
        while not stop.wait(rnd.uniform(*kill_every)):
            name = rnd.choice([n for n in stack.procs if n.startswith("worker-")])
            if stack.procs[name].alive():
                stack.kill(name, signal.SIGKILL)
                kills += 1

    threading.Thread(target=killer, daemon=True).start()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for token, _ in tqdm(pool.map(lambda _: client.post(data, {"width": 64}), range(jobs)), total=jobs,
                             desc="soak: submitting", leave=False):
            tokens.append(token)
            accepted += 1
    outcome = {"SUCCESS": 0, "FAILURE": 0}
    lost = []
    bar = tqdm(total=len(tokens), desc="soak: waiting for every job", leave=False)
    deadline = time.time() + 600
    pending = list(tokens)
    while pending and time.time() < deadline:
        still = []
        for token in pending:
            status = client.http.get(f"{client.base}/api/v1/resize/{token}", timeout=30).json().get("status")
            if status in outcome:
                outcome[status] += 1
                bar.update()
            else:
                still.append(token)
        pending = still
        if pending:
            time.sleep(1)
    stop.set()
    bar.close()
    lost = pending
    storage = Storage(Settings.from_env(stack.env))
    duplicated = 0
    keys: dict[str, list[str]] = {}
    paginator = storage.client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=storage.bucket, Prefix="outputs/"):
        for obj in page.get("Contents", []):
            token = obj["Key"].split("/")[2]
            keys.setdefault(token, []).append(obj["Key"])
    for token in tokens:
        found = keys.get(token, [])
        if len(found) > 2:  # one output + its manifest
            duplicated += 1
    return {"accepted": accepted, "succeeded": outcome["SUCCESS"], "failed": outcome["FAILURE"], "lost": len(lost),
            "duplicated_outputs": duplicated, "workers_killed": kills}


# -- report --------------------------------------------------------------------------------------------
def cpu_reference_ms() -> float:
    """A fixed pure-Python loop: how fast this machine's CPU was during the run (lower is faster).

    Shared virtual machines vary from day to day; runs are comparable only
    when this figure is close.
    """
    times = []
    for _ in range(5):
        t = time.perf_counter()
        sum(range(10_000_000))
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def markdown(results: dict) -> str:
    speed = ""
    if "cpu_reference_ms" in results:
        speed = (f" CPU reference (a fixed Python loop, lower is faster): {results['cpu_reference_ms']:.0f} ms"
                 f" before the run, {results.get('cpu_reference_ms_after', float('nan')):.0f} ms after.")
    lines = [f"## Benchmark run {results['when']}", "",
             f"{results['machine']}; {WORKERS} workers, {CLIENTS} concurrent clients.{speed}", ""]
    lines += ["### Kernel: decode + resize + encode (one process)", "",
              "| image | target | ours ms | naive ms | speed-up | ours peak MB | naive peak MB | memory ratio |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["kernel"]:
        ratio = f"{r['memory_ratio']:.2f}" if r["memory_ratio"] is not None else "-"
        lines.append(f"| {r['image']} | {r['target']} | {r['ours_ms']:.1f} | {r['naive_ms']:.1f} | {r['speedup']:.1f}x"
                     f" | {r['ours_peak_mb']:.0f} | {r['naive_peak_mb']:.0f} | {ratio} |")
    lines += ["", "### End to end (POST → SUCCESS seen by a polling client)", "",
              "| image | target | jobs/s | p50 ms | p95 ms | p99 ms | kernel ceiling jobs/s | efficiency |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["e2e"]:
        lines.append(f"| {r['image']} | {r['target']} | {r['jobs_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f}"
                     f" | {r['p99_ms']:.0f} | {r['ceiling']:.1f} | {r['efficiency']:.2f} |")
    p = results["post"]
    m = results["memory"]
    lines += ["", f"POST latency, {p['bytes'] / 1e6:.1f} MB upload, {p['count']} POSTs from {CLIENTS} clients while "
              f"workers are busy: p50 {p['p50_ms']:.0f} ms, p99 {p['p99_ms']:.0f} ms.", "",
              f"Peak RSS: worker {m['worker_peak_mb']:.0f} MB (after a {m['big_image']} job), "
              f"API process {m['api_peak_mb']:.0f} MB over the whole run"
              + (" (36 and 50 MP uploads included)" if not results.get("smoke") else "")
              + (f", {p['api_peak_mb']:.0f} MB during the 2 MB POSTs alone." if "api_peak_mb" in p else "."), ""]
    if results.get("soak"):
        s = results["soak"]
        lines += [f"Soak: {s['accepted']} jobs accepted while {s['workers_killed']} workers were SIGKILLed: "
                  f"{s['succeeded']} succeeded, {s['failed']} failed, **{s['lost']} lost**, "
                  f"**{s['duplicated_outputs']} duplicated outputs**.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny images and few jobs (seconds, for CI)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per end-to-end case")
    parser.add_argument("--soak-jobs", type=int, default=None)
    parser.add_argument("--no-soak", action="store_true")
    args = parser.parse_args(argv)
    smoke = args.smoke
    jobs = args.jobs or (16 if smoke else 240)
    soak_jobs = args.soak_jobs or (40 if smoke else 2000)

    from resizer.local import Stack, free_port

    results: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}", "smoke": smoke}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        results["cpu_reference_ms"] = cpu_reference_ms()
        images = make_images(smoke)
        print("1/6 kernel table (ours vs naive Pillow)...", flush=True)
        results["kernel"] = kernel_table(images, tmp, smoke)

        stack = Stack(workdir=tmp / "var", port=free_port(), s3_port=free_port(), dashboard_port=None,
                      workers=WORKERS, own_redis=True, log_dir=tmp / "logs",
                      env={"APP_ENV": "testing", "ACCESS_LOG": "0", "LOG_LEVEL": "WARNING", "S3_BUCKET": "bench"})
        for key in ("S3_ENDPOINT_URL", "S3_PUBLIC_ENDPOINT_URL", "REDIS_URL"):
            os.environ.pop(key, None)
        stack.start()
        stack.run_supervisor(interval=0.2)
        try:
            client = Client(f"http://127.0.0.1:{stack.port}")
            print("2-3/6 kernel ceiling and end-to-end throughput...", flush=True)
            rows = []
            for name, data in images.items():
                for target, opts in TARGETS.items():
                    if name == "1x1 PNG" and target != "100x100":
                        continue
                    n = jobs // 4 if "36" in name else jobs
                    ceil = ceiling(data, opts, 1.5 if smoke else 6)
                    row = {"image": name, "target": target, "ceiling": ceil,
                           **e2e(client, data, opts, n, f"e2e {name} -> {target}")}
                    row["efficiency"] = row["jobs_per_s"] / ceil
                    rows.append(row)
                    print(f"    {name:>14} -> {target:<9} {row['jobs_per_s']:7.1f} jobs/s  ceiling {ceil:7.1f}"
                          f"  efficiency {row['efficiency']:.2f}  p50 {row['p50_ms']:.0f} ms", flush=True)
            results["e2e"] = rows

            print("4/6 POST latency of a 2 MB upload under load...", flush=True)
            two_mb = jpeg(3000, 2250, quality=92, seed=9) if not smoke else images["2 MP JPEG"]  # 2.4 MB
            api_pids = children(stack.procs["api"].pid)
            api_peak_before_posts = max(vm_hwm_mb(pid) for pid in api_pids)
            reset_peak_rss(api_pids)
            results["post"] = post_latency(client, two_mb, 40 if smoke else 200)
            results["post"]["api_peak_mb"] = max(vm_hwm_mb(pid) for pid in api_pids)
            drain(stack)

            print("5/6 peak memory...", flush=True)
            big_name, big = ("2 MP JPEG", images["2 MP JPEG"]) if smoke else ("50 MP JPEG", jpeg(8660, 5774, quality=85))
            client.wait(client.post(big, {"width": 1024})[0])
            client.wait(client.post(big, {"width": 100})[0])
            worker_peak = max(vm_hwm_mb(p.pid) for n, p in stack.procs.items() if n.startswith("worker-") and p.alive())
            api_peak = max([api_peak_before_posts] + [vm_hwm_mb(pid) for pid in children(stack.procs["api"].pid)])
            results["memory"] = {"worker_peak_mb": worker_peak, "api_peak_mb": api_peak, "big_image": big_name}

            if not args.no_soak:
                print(f"6/6 soak: {soak_jobs} jobs while workers are killed at random...", flush=True)
                results["soak"] = soak(stack, client, images["2 MP JPEG"], soak_jobs,
                                       (1.0, 2.0) if smoke else (3.0, 8.0))
        finally:
            stack.stop()

    results["cpu_reference_ms_after"] = cpu_reference_ms()
    table = markdown(results)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (args.out / f"{stamp}.json").write_text(json.dumps(results, indent=2))
    (args.out / f"{stamp}.md").write_text(table)
    if not smoke:
        doc = ROOT / "docs" / "performance.md"
        head = doc.read_text().split("<!-- results -->")[0] if doc.exists() else "# Performance\n\n"
        doc.write_text(head + "<!-- results -->\n\n" + table)
    print(f"\nwritten: {args.out / stamp}.json and .md" + ("" if smoke else ", docs/performance.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
