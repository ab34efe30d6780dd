"""The benchmark's phases that load ours alone: POST latency, peak memory, a Redis backlog (the original too)
and the soak with workers killed at random."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from bench.load import CLIENTS, UNIQUE, Client, await_endings, pct, unique_json

ENDING_DEADLINE_S = 600  # the backlog and the soak wait this long for every job to end
OPTS = {"100x100": {"width": 100, "height": 100, "fit": "cover"}, "1024 wide": {"width": 1024}}


def _load(base: str, image: bytes, stop, jobs, errors) -> None:
    """CLIENTS clients running jobs of ``image`` back to back until ``stop`` is set (in a process of its own)."""
    def loop() -> None:
        own = Client(base)
        while not stop.is_set():
            try:
                ok = own.long_poll(own.post_raw(image + os.urandom(UNIQUE), OPTS["100x100"])[0])["status"] == "SUCCESS"
            except Exception:  # counted: a load that quietly thinned out would flatter the latency
                ok = False
            counter = jobs if ok else errors
            with counter.get_lock():
                counter.value += 1

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def post_latency(client: Client, data: bytes, count: int, load: bytes, seconds_between: float = 0.2) -> dict:
    """The latency of an upload of ``data`` while the service is under load, and the service saturated by uploads.

    Under load: CLIENTS clients run jobs of ``load`` back to back (long poll), which keeps every worker busy and
    the CPU at 100%, while uploads of ``data`` start every ``seconds_between`` on a fixed schedule (an open loop:
    a slow upload does not hold the next one back, so a stall shows in every upload it delays). The load runs in
    a process of its own, so the uploads do not wait for the load clients' share of the benchmark's GIL; its
    failures are counted. Saturated: CLIENTS threads POST ``data`` back to back, nothing else, so each waits for
    the others: its latency is CLIENTS / the API's upload throughput (Little's law).
    """
    context = multiprocessing.get_context("fork")
    stop, jobs, errors = context.Event(), context.Value("i", 0), context.Value("i", 0)
    loader = context.Process(target=_load, args=(client.base, load, stop, jobs, errors), daemon=True)
    loader.start()
    try:
        time.sleep(3)  # every worker busy
        started, loaded = time.perf_counter(), jobs.value

        def upload(_: int) -> float:
            return Client(client.base).post_raw(data + os.urandom(UNIQUE), {"width": 100})[1]

        with ThreadPoolExecutor(4) as pool:
            futures = []
            for k in tqdm(range(count), desc="POST under load (2 MB)", leave=False):
                time.sleep(max(0.0, started + k * seconds_between - time.perf_counter()))
                futures.append(pool.submit(upload, k))
            times = [f.result() for f in futures]
        load_rate = (jobs.value - loaded) / (time.perf_counter() - started)
    finally:
        stop.set()
        loader.join(60)
        if loader.is_alive():
            loader.kill()
    saturated = []
    with ThreadPoolExecutor(CLIENTS) as pool:
        for _, elapsed in tqdm(pool.map(lambda _: client.post_raw(data + os.urandom(UNIQUE), {"width": 100}),
                                        range(count)), total=count,
                               desc="POST saturated (2 MB)", leave=False):
            saturated.append(elapsed)
    return {"p50_ms": pct(times, 50) * 1000, "p99_ms": pct(times, 99) * 1000, "max_ms": max(times) * 1000,
            "load_jobs_per_s": load_rate, "load_errors": errors.value, "bytes": len(data), "count": count,
            "seconds_between": seconds_between,
            "saturated": {"p50_ms": pct(saturated, 50) * 1000, "p99_ms": pct(saturated, 99) * 1000,
                          "uploads_per_s": len(saturated) / sum(saturated) * CLIENTS}}


class PersistencePauses:
    """Redis's own record of where it stalled on its append-only file while a phase ran (``LATENCY HISTORY``
    of its ``aof-*`` events at or above ``threshold_ms``): a rewrite that ends by deleting a large file, on a
    filesystem that discards freed blocks online, stalls every fsync meanwhile (see docs/operations.md)."""

    def __init__(self, redis_url: str, threshold_ms: int = 40):
        from redis import Redis

        self.redis = Redis.from_url(redis_url)
        self.threshold_ms = threshold_ms

    def __enter__(self) -> PersistencePauses:
        self.redis.config_set("latency-monitor-threshold", self.threshold_ms)
        self.redis.execute_command("LATENCY", "RESET")
        return self

    def __exit__(self, *exc) -> None:
        self.redis.config_set("latency-monitor-threshold", 0)
        self.redis.close()

    def read(self) -> dict:
        """Per event: the seconds (at most one sample each, its longest) it went past the threshold, and the longest."""
        events = {}
        for latest in self.redis.execute_command("LATENCY", "LATEST"):
            name = latest[0].decode() if isinstance(latest[0], bytes) else str(latest[0])
            if name.startswith("aof"):
                samples = [int(ms) for _, ms in self.redis.execute_command("LATENCY", "HISTORY", name)]
                events[name] = {"seconds": len(samples), "max_ms": max(samples, default=0)}
        return {"threshold_ms": self.threshold_ms, "events": events}


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


# -- 6. backlog: Redis memory with thousands of jobs queued ------------------------------------------
def backlog(system, client: Client, redis_url: str, data: bytes, jobs: int) -> dict:
    """Queue ``jobs`` with the workers stopped, then let them drain and check every job; Redis's used_memory is
    sampled all along (its own used_memory_peak counts from its start: CONFIG RESETSTAT leaves it in Redis 7)."""
    from redis import Redis

    redis = Redis.from_url(redis_url)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        probe = Redis.from_url(redis_url)
        while not stop.wait(0.05):
            samples.append(probe.info("memory")["used_memory"])

    system.stop_workers()
    before = redis.info("memory")["used_memory"]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        unique = unique_json(data, {})
        rejected: list[str] = []

        def submit(_) -> str | None:
            try:
                if system.name == "original":
                    return client.post_json(unique())[0]
                return client.post_raw(data + os.urandom(UNIQUE), OPTS["100x100"])[0]
            except Exception as exc:  # a service that refuses work past a limit is an answer, not a crash
                rejected.append(str(exc)[:200])
                return None

        with ThreadPoolExecutor(CLIENTS) as pool:
            tokens = [t for t in tqdm(pool.map(submit, range(jobs)), total=jobs,
                                      desc=f"backlog ({system.name}): queueing", leave=False) if t]
        queued = redis.info("memory")["used_memory"]
    finally:
        system.start_workers()
    start = time.perf_counter()
    ended, lost = await_endings(
        lambda token: client.http.get(f"{client.base}/api/v1/resize/{token}", params={"wait": 0}, timeout=60),
        tokens, ENDING_DEADLINE_S, f"backlog ({system.name}): draining")
    outcome = {"succeeded": sum(1 for s in ended.values() if s == "SUCCESS"),
               "failed": sum(1 for s in ended.values() if s == "FAILURE"), **_lost_or_unfinished(lost)}
    drained = time.perf_counter() - start
    stop.set()
    sampler.join()
    mb = 1024 * 1024
    peak = max(samples + [queued, before])
    return {"system": system.name, "jobs": len(tokens), "rejected": len(rejected), "rejections": sorted(set(rejected))[:3],
            "image_bytes": len(data), "used_before_mb": before / mb,
            "used_mb": queued / mb, "peak_mb": peak / mb, "bytes_per_job": (peak - before) / max(len(tokens), 1),
            "redis_peak_since_start_mb": redis.info("memory")["used_memory_peak"] / mb, "drain_s": drained, **outcome}


# -- 7. soak ----------------------------------------------------------------------------------------
def _lost_or_unfinished(lost: dict[str, str]) -> dict[str, int]:
    """await_endings' jobs that did not end: "lost" the service no longer knows (404), "unfinished" it still had
    queued or running at the deadline (a stall, not a loss)."""
    gone = sum(1 for why in lost.values() if why == "404")
    return {"lost": gone, "unfinished": len(lost) - gone, "deadline_s": ENDING_DEADLINE_S}


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
        for token, _ in tqdm(pool.map(lambda _: client.post_raw(data + os.urandom(UNIQUE), {"width": 64}), range(jobs)),
                             total=jobs,
                             desc="soak: submitting", leave=False):
            tokens.append(token)
            accepted += 1
    ended, lost = await_endings(
        lambda token: client.http.get(f"{client.base}/api/v1/resize/{token}", params={"wait": 0}, timeout=30),
        tokens, ENDING_DEADLINE_S, "soak: waiting for every job")
    stop.set()
    outcome = {status: sum(1 for s in ended.values() if s == status) for status in ("SUCCESS", "FAILURE")}
    storage = Storage(Settings.from_env(stack.env))
    keys: dict[str, list[str]] = {}
    paginator = storage.client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=storage.bucket, Prefix="outputs/"):
        for obj in page.get("Contents", []):
            # outputs/<tenant>/<t>/<token>/<name>: the token is the folder the file is in
            keys.setdefault(obj["Key"].rsplit("/", 2)[-2], []).append(obj["Key"])
    # A job leaves one object: its output (carrying its record), or a failure's manifest.json.
    duplicated = sum(1 for token in tokens if len(keys.get(token, [])) > 1)
    missing = sum(1 for token in tokens if ended.get(token) == "SUCCESS" and not keys.get(token))
    return {"accepted": accepted, "succeeded": outcome["SUCCESS"], "failed": outcome["FAILURE"],
            **_lost_or_unfinished(lost),
            "duplicated_outputs": duplicated, "missing_outputs": missing, "workers_killed": kills}
