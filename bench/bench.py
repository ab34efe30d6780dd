"""The benchmark: one command, the real stack, a table.  `make bench` (or `--smoke` for a quick check).

Phases (``--only``), each printed as it runs:
  kernel   decode+resize+encode only: ours vs naive Pillow (full decode + Lanczos), time and peak memory
  e2e      the workloads of issue 14 on three systems driven by the same 8-client load (bench/load.py):
           ours (gunicorn, RQ workers, rclone serve s3), the original design (bench/original: Flask +
           Celery; its API on Flask's own server as it ran, and on gunicorn as the stricter comparison)
           and thumbor 7.7; jobs/s, latency, CPU per job of each role read from /proc, and
           the ratios the goals are stated in.  Also the kernel ceiling: ours in 2 processes, no plumbing;
           and the stack's floor (bench/floor.py): an RQ job and the service's two requests with nothing in
           them, which with the kernel's CPU give each goal a ceiling estimate on this machine
  post     POST latency of a 2 MB upload under load (one uploader while 8 clients keep the workers busy),
           and with 8 uploaders saturating the API (ours)
  memory   peak RSS of a worker (incl. a 50 MP JPEG job) and of an API process (ours)
  backlog  Redis memory with thousands of jobs queued and the workers stopped (ours and the original)
  soak     thousands of jobs while workers are SIGKILLed at random: lost and duplicated must be 0 (ours)

Every server runs on a free port with PR_SET_PDEATHSIG: it ends with the benchmark.
Results go to bench/results/<time>.json and .md, and (full runs) docs/performance.md.
A quick A/B: ``bench/bench.py --only e2e --workload png1 --systems ours,original --jobs 400``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from bench.images import jpeg, png  # noqa: E402
from bench.floor import stack_floor  # noqa: E402
from bench.kernel import ceiling, kernel_table  # noqa: E402
from bench.load import WORKLOADS, Client, job_for, run_load  # noqa: E402
from bench.phases import (OPTS, PersistencePauses, backlog, children, drain, post_latency,  # noqa: E402
                          reset_peak_rss, soak, vm_hwm_mb)
from bench.report import GOALS, markdown, ms  # noqa: E402


# -- images ------------------------------------------------------------------------
def make_images(smoke: bool) -> dict[str, bytes]:
    sizes = {"1x1 PNG": None, "1024x768 JPEG": (1024, 768), "2 MP JPEG": (1632, 1224), "2.8 MP JPEG": (2048, 1365),
             "12 MP JPEG": (4000, 3000), "36 MP JPEG": (7200, 5000)}
    if smoke:  # the same names, small pixels: a check that every path works, not a measurement
        sizes = {"1x1 PNG": None, "1024x768 JPEG": (320, 240), "2.8 MP JPEG": (400, 300), "12 MP JPEG": (480, 360)}
    images = {}
    for name, size in tqdm(sizes.items(), desc="generating images", leave=False):
        images[name] = png(1, 1) if size is None else jpeg(*size, quality=85, seed=len(images) + 1)
    return images


# The end-to-end workloads' files (thumbor's file loader reads them from this folder) and the kernel images they are.
FILES = {"png1.png": "1x1 PNG", "12mp.jpg": "12 MP JPEG", "2.8mp.jpg": "2.8 MP JPEG"}


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


PHASES = ("kernel", "e2e", "post", "memory", "backlog", "soak")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="example: bench/bench.py --only e2e --workload png1 --systems ours,original"
                                            " --jobs 400")
    parser.add_argument("--smoke", action="store_true", help="tiny images and few jobs, no thumbor (seconds, for CI)")
    parser.add_argument("--only", default=",".join(PHASES), help=f"phases to run, comma-separated: {','.join(PHASES)}")
    parser.add_argument("--workload", default=None,
                        help="end-to-end workloads, comma-separated: " + ",".join(w.key for w in WORKLOADS))
    parser.add_argument("--systems", default=None,
                        help="ours,original,original-gunicorn,thumbor (default: all; smoke: all but thumbor)")
    parser.add_argument("--modes", default="polling,long poll,one request,sync",
                        help="client modes: polling, long poll, one request, sync")
    parser.add_argument("--jobs", type=int, default=None, help="jobs measured per end-to-end case (smoke: 16)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds measured per end-to-end case (default 20 unless --jobs is given; with"
                             " --jobs: whichever ends first)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the end-to-end matrix, interleaved")
    parser.add_argument("--backlog-jobs", type=int, default=None, help="jobs queued in the backlog phase (3000)")
    parser.add_argument("--backlog-systems", default="ours,original")
    parser.add_argument("--soak-jobs", type=int, default=None)
    parser.add_argument("--no-soak", action="store_true", help="the same as leaving soak out of --only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    parser.add_argument("--ours-workers", type=int, default=4,
                        help="worker processes of ours (default 4: two per core hide storage and Redis round trips)")
    parser.add_argument("--ours-redis-fsync", choices=["always", "everysec", "shared"], default="always",
                        help="ours on its own Redis with this appendfsync (default always: small originals ride in Redis), or on the shared one")
    args = parser.parse_args(argv)
    args.phases = [p.strip() for p in args.only.split(",") if p.strip()]
    if args.no_soak and "soak" in args.phases:
        args.phases.remove("soak")
    unknown = set(args.phases) - set(PHASES)
    keys = [w.key for w in WORKLOADS]
    args.workloads = args.workload.split(",") if args.workload else (["png1", "2.8mp-100"] if args.smoke else keys)
    args.systems = (args.systems or ("ours,original,original-gunicorn" if args.smoke
                                     else "ours,original,original-gunicorn,thumbor")).split(",")
    args.modes = [m.strip() for m in args.modes.split(",")]
    for bad, allowed, what in ((unknown, PHASES, "phase"), (set(args.workloads) - set(keys), keys, "workload"),
                               (set(args.systems) - set(SYSTEMS), SYSTEMS,
                                "system")):
        if bad:
            parser.error(f"unknown {what} {', '.join(sorted(bad))}; choose from {', '.join(allowed)}")
    if args.jobs is None and args.seconds is None:
        if args.smoke:
            args.jobs = 16
        else:
            args.seconds = 20.0
    # the docs show a full run only
    args.full = not args.smoke and argv_is_default(argv)
    return args


def argv_is_default(argv: list[str] | None) -> bool:
    given = sys.argv[1:] if argv is None else argv
    return not any(a.split("=")[0] in ("--only", "--workload", "--systems", "--modes", "--jobs", "--seconds",
                                        "--no-soak", "--soak-jobs", "--backlog-jobs", "--backlog-systems")
                   for a in given)


def e2e_matrix(args, systems: dict, image_dir: Path, images: dict[str, bytes], results: dict) -> None:
    by_key = {w.key: w for w in WORKLOADS}
    results["ceiling"], results["kernel_cpu_ms"] = {}, {}
    if "ours" in systems:
        for key in tqdm(args.workloads, desc="kernel ceiling (ours, 2 processes)", leave=False):
            w = by_key[key]
            results["ceiling"][key], results["kernel_cpu_ms"][key] = ceiling(images[FILES[w.image]], OPTS[w.target],
                                                                              0.5 if args.smoke else 5)
        cases = [(by_key[key], mode, (image_dir / by_key[key].image).read_bytes())
                 for key, mode in dict.fromkeys((w, num[1]) for w, num, _, _ in GOALS
                                                if num[0] == "ours" and w in args.workloads and num[1] in args.modes)]
        if cases:
            say("the stack's floor: an RQ job and the service's two requests with nothing in them...")
            try:
                results["floor"] = stack_floor(image_dir.parent / "floor", cases, 50 if args.smoke else 2000,
                                               30.0 if args.smoke else 5.0, 16 if args.smoke else None)
            except Exception as exc:  # an estimate beside the goals: without it the run still reports the rest
                results["floor_error"] = f"{type(exc).__name__}: {exc}"[:500]
                say(f"  the floor could not be measured ({results['floor_error']}); no ceiling estimates")
            else:
                rq = results["floor"]["rq"]
                say(f"  an RQ job {rq['job_ms']:.2f} ms of CPU (enqueue {rq['enqueue_ms']:.2f}, SimpleWorker"
                    f" {rq['worker_ms']:.2f}, Redis {rq['redis_ms']:.2f}); the requests, server + client: "
                    + ", ".join(f"{k} {v['api_ms']:.2f} + {v['client_ms']:.2f}"
                                for k, v in results["floor"]["transport"].items()))
    rows = results["e2e"] = []
    for rnd in range(1, args.rounds + 1):
        for key in args.workloads:
            w = by_key[key]
            data = (image_dir / w.image).read_bytes()
            for name, system in systems.items():
                for mode in system.modes:
                    if mode not in args.modes:
                        continue
                    client = Client(system.base)
                    job = job_for(name, mode, client, w, data)
                    if job is None:
                        continue
                    desc = f"{w.key} {name} {mode}" + (f" (round {rnd})" if args.rounds > 1 else "")
                    row = {"workload": key, "system": name, "mode": mode, "round": rnd,
                           **run_load(job, system.roles, desc, args.jobs, args.seconds)}
                    rows.append(row)
                    cpu = row["cpu_ms_per_job"]
                    roles = ", ".join(f"{k} {ms(cpu[k])}" for k in ("api", "workers", "storage", "redis", "client"))
                    say(f"  {w.label:<24} {name:>8} {mode:<11} {row['jobs_per_s']:8.1f} jobs/s"
                        f"  p50 {row['p50_ms']:5.0f} ms  CPU/job {cpu['total']:6.1f} ms ({roles})"
                        + (f"  FAILED {row['failures']}: {row['errors']}" if row["failures"] else ""))


_T0 = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f} s] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    smoke, phases = args.smoke, args.phases
    soak_jobs = args.soak_jobs or (40 if smoke else 2000)
    backlog_jobs = args.backlog_jobs or (50 if smoke else 3000)
    results: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}", "smoke": smoke,
                     "cores": len(os.sched_getaffinity(0)),  # the CPUs this run may use (the estimates' budget)
                     "ours_config": f"{args.ours_workers} workers, "
                                    + ("the shared Redis" if args.ours_redis_fsync == "shared"
                                       else f"its own Redis with appendfsync {args.ours_redis_fsync}"),
                     "argv": sys.argv[1:] if argv is None else argv,
                     "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3])}
    say(f"load average before the run: {results['loadavg']} (other work on the machine skews every figure)")
    from bench.peers import Original, OriginalOnGunicorn, Ours, Thumbor, start_redis
    from bench.procs import Group

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        results["cpu_reference_ms"] = cpu_reference_ms()
        images = make_images(smoke)
        image_dir = tmp / "images"
        image_dir.mkdir()
        for file, name in FILES.items():
            (image_dir / file).write_bytes(images[name])
        if "kernel" in phases:
            say("kernel table (ours vs naive Pillow)...")
            results["kernel"] = kernel_table(images, tmp, smoke)
        need_ours = bool({"post", "memory", "soak"} & set(phases)) or "ours" in args.systems
        group = Group(tmp / "logs")
        systems: dict = {}
        try:
            if not {"e2e", "post", "memory", "backlog", "soak"} & set(phases):
                raise _Skip
            redis_pid, redis_url = start_redis(group, tmp)
            say("starting the systems...")
            # each is registered before it starts, so one that fails half-way is stopped too
            if need_ours:
                systems["ours"] = Ours(tmp, redis_url, redis_pid, workers=args.ours_workers,
                                       redis_fsync=None if args.ours_redis_fsync == "shared" else args.ours_redis_fsync)
            if {"original", "original-gunicorn"} & set(args.systems) and ("e2e" in phases or "backlog" in phases):
                systems["original"] = Original(tmp, redis_url, redis_pid)
                if "original-gunicorn" in args.systems and "e2e" in phases:
                    systems["original-gunicorn"] = OriginalOnGunicorn(systems["original"])
            if "thumbor" in args.systems and "e2e" in phases:
                systems["thumbor"] = Thumbor(tmp, image_dir)
            for system in systems.values():
                system.start()
            results["peers"] = "; ".join(
                [f"original: Flask + {systems['original'].version} {ORIGINAL_NOTE}" if "original" in systems else "",
                 f"{systems['thumbor'].version}, 2 processes" if "thumbor" in systems else ""]).strip("; ") or "—"
            if "e2e" in phases:
                say("end to end: every workload, system and client mode...")
                e2e_matrix(args, {k: v for k, v in systems.items() if k in args.systems}, image_dir, images,
                           results)
            ours = systems.get("ours")
            if ours is not None and "post" in phases:
                say("POST latency of a 2 MB upload under load (ours)...")
                client = Client(ours.base)
                two_mb = jpeg(3000, 2250, quality=92, seed=9) if not smoke else images["2.8 MP JPEG"]  # 2.4 MB
                api_pids = children(ours.stack.procs["api"].pid)
                results["api_peak_before_posts"] = max(vm_hwm_mb(pid) for pid in api_pids)
                reset_peak_rss(api_pids)
                with PersistencePauses(ours.redis_url) as pauses:
                    results["post"] = post_latency(client, two_mb, 40 if smoke else 200, images["2.8 MP JPEG"],
                                                   0.05 if smoke else 0.2)
                    results["post"]["redis_pauses"] = pauses.read()
                results["post"]["api_peak_mb"] = max(vm_hwm_mb(pid) for pid in api_pids)
                drain(ours.stack)
            if ours is not None and "memory" in phases:
                say("peak memory (ours)...")
                client = Client(ours.base)
                big_name, big = (("12 MP JPEG", images["12 MP JPEG"]) if smoke
                                 else ("50 MP JPEG", jpeg(8660, 5774, quality=85)))
                client.long_poll(client.post_raw(big, {"width": 1024})[0])
                client.long_poll(client.post_raw(big, {"width": 100})[0])
                worker_peak = max(vm_hwm_mb(ours.stack.procs[n].pid) for n in ours.worker_names()
                                  if ours.stack.procs[n].alive())
                api_peak = max([results.get("api_peak_before_posts", 0)]
                               + [vm_hwm_mb(pid) for pid in children(ours.stack.procs["api"].pid)])
                results["memory"] = {"worker_peak_mb": worker_peak, "api_peak_mb": api_peak, "big_image": big_name}
            if "backlog" in phases:
                results["backlog"] = []
                for name in args.backlog_systems.split(","):
                    if name in systems and name in args.systems:
                        say(f"Redis memory under a backlog of {backlog_jobs} jobs ({name})...")
                        results["backlog"].append(backlog(systems[name], Client(systems[name].base),
                                                          getattr(systems[name], "redis_url", redis_url),
                                                          images["1024x768 JPEG"], backlog_jobs))
            if ours is not None and "soak" in phases:
                say(f"soak: {soak_jobs} jobs while workers are killed at random (ours)...")
                results["soak"] = soak(ours.stack, Client(ours.base), images["2.8 MP JPEG"], soak_jobs,
                                       (1.0, 2.0) if smoke else (3.0, 8.0))
        except _Skip:
            pass
        finally:
            for system in reversed(list(systems.values())):
                system.stop()
            group.stop_all()

    results["cpu_reference_ms_after"] = cpu_reference_ms()
    table = markdown(results)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (args.out / f"{stamp}.json").write_text(json.dumps(results, indent=2))
    (args.out / f"{stamp}.md").write_text(table)
    written = f"{args.out / stamp}.json and .md"
    if args.full and not args.no_docs:
        doc = ROOT / "docs" / "performance.md"
        head = doc.read_text().split("<!-- results -->")[0] if doc.exists() else "# Performance\n\n"
        doc.write_text(head + "<!-- results -->\n\n" + table)
        written += ", docs/performance.md"
    print(f"\nwritten: {written}")
    return 0


SYSTEMS = ("ours", "original", "original-gunicorn", "thumbor")
ORIGINAL_NOTE = ("(prefork, concurrency 2), Redis broker and result backend; its API on Flask's own server, as it ran"
                 " (and, as \"original on gunicorn\", under gunicorn 2×8 threads)")


class _Skip(Exception):
    """No phase needs the servers."""


if __name__ == "__main__":
    sys.exit(main())
