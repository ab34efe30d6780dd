"""A smoke run of the benchmark: it starts the real stack, prints the table and writes Markdown and JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_benchmark_smoke_run(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--smoke", "--out", str(tmp_path),
                          "--soak-jobs", "30"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "### End to end" in run.stdout and "| jobs/s |" in run.stdout
    (result,) = tmp_path.glob("*.json")
    data = json.loads(result.read_text())
    assert {r["image"] for r in data["e2e"]} >= {"1x1 PNG", "2 MP JPEG"}
    assert all(r["failures"] == 0 and r["jobs_per_s"] > 0 for r in data["e2e"])
    assert data["soak"]["lost"] == 0 and data["soak"]["duplicated_outputs"] == 0
    assert data["soak"]["succeeded"] == data["soak"]["accepted"] == 30
    assert list(tmp_path.glob("*.md"))
