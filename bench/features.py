"""What each v1.1 feature costs per job, in CPU: `python bench/features.py` (prints a Markdown table).

Kernel features are timed in this process (process_time, median of repeated runs) on the benchmark's
own images: smart crop and a watermark against the same job without them; the placeholder (always on)
by timing its own step; reuse of identical work by its fingerprint (SHA-256 over the upload) and claim
(one Redis round trip, measured against a private redis-server when one is installed).
"""

from __future__ import annotations

import hashlib
import io
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from bench.images import jpeg  # noqa: E402
from resizer import reuse  # noqa: E402
from resizer.imaging import ImageLimits, process  # noqa: E402
from resizer.imaging.placeholder import placeholder, thumbnail  # noqa: E402
from resizer.local import find_binary, free_port, port_open, wait_for  # noqa: E402
from resizer.options import Limits, parse_options  # noqa: E402


def cpu_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times) * 1000


def mark() -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (200, 80), (255, 255, 255, 200)).save(buf, "PNG")
    return buf.getvalue()


def main() -> int:
    images = {"2.8 MP JPEG → 100×100 cover": (jpeg(2048, 1365, quality=85, seed=2), {"width": 100, "height": 100,
                                                                                    "fit": "cover"}),
              "12 MP JPEG → 1024 wide": (jpeg(4000, 3000, quality=85, seed=3), {"width": 1024})}
    rows = []
    marks = {"logo": mark()}
    for label, (data, options) in images.items():
        repeat = 15 if "2.8" in label else 7
        base = parse_options(options, Limits())
        smart = parse_options({**options, "gravity": "smart", "fit": "cover", "height": options.get("height", 768)},
                              Limits())
        plain_cover = parse_options({**options, "fit": "cover", "height": options.get("height", 768)}, Limits())
        marked = parse_options({**options, "watermark": {"image": "logo", "scale": 0.2}}, Limits())
        limits = ImageLimits()
        t_base = cpu_ms(lambda: process(data, base, limits), repeat)
        t_cover = cpu_ms(lambda: process(data, plain_cover, limits), repeat)
        t_smart = cpu_ms(lambda: process(data, smart, limits), repeat)
        t_mark = cpu_ms(lambda: process(data, marked, limits, watermarks=marks), repeat)
        picture = Image.open(io.BytesIO(data))
        picture.draft("RGB", (256, 256))
        picture = picture.convert("RGB")
        t_placeholder = cpu_ms(lambda: placeholder(thumbnail(picture)), repeat * 3)
        t_print = cpu_ms(lambda: hashlib.sha256(data).digest(), repeat * 3)
        rows.append((label, t_base, t_smart - t_cover, t_mark - t_base, t_placeholder, t_print))
    claim = redis_claim_ms()
    print("| job | the job (ms CPU) | smart crop | watermark | placeholder (always on) | reuse: fingerprint | "
          "reuse: claim (Redis) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, t_base, smart, marked, ph, fp in rows:
        print(f"| {label} | {t_base:.1f} | {smart:+.1f} | {marked:+.1f} | {ph:.2f} | {fp:.2f} | {claim} |")
    return 0


def redis_claim_ms() -> str:
    server = find_binary("redis-server")
    if server is None:
        return "—"
    import redis

    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open("127.0.0.1", port), "redis-server")
        connection = redis.Redis(port=port)
        counter = iter(range(10**9))
        return f"{cpu_ms(lambda: reuse.claim(connection, str(next(counter)), 'token', 60), 500):.2f}"
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    sys.exit(main())
