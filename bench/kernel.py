"""The image kernel alone: ours against naive Pillow in one process, and ours in WORKERS processes (the ceiling
the hardware allows, with no plumbing at all)."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2

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


def kernel_table(images: dict[str, bytes], tmp: Path, smoke: bool, skip: tuple[str, ...] = ("2.8 MP JPEG",)) -> list[dict]:
    rows = []
    names = [n for n in images if "JPEG" in n and ("MP" in n or smoke) and n not in skip]
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
    n, end, cpu = 0, time.perf_counter() + seconds, time.process_time()
    while time.perf_counter() < end:
        process(data, spec, ImageLimits())
        n += 1
    return n, time.process_time() - cpu


def ceiling(data: bytes, opts: dict, seconds: float) -> tuple[float, float]:
    """(jobs/s of WORKERS processes running the kernel flat out, its ms of CPU a job): the first is what the
    hardware gives with no plumbing at all; the second is the kernel's cost, whatever else ran meanwhile."""
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        runs = pool.map(_ceiling_worker, [(data, opts, seconds)] * WORKERS)
    jobs = sum(n for n, _ in runs)
    return jobs / seconds, sum(cpu for _, cpu in runs) * 1000 / max(jobs, 1)
