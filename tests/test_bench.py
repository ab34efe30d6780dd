"""A smoke run of the benchmark: it starts ours and the original design's baseline (bench/original: Flask +
Celery, installed into var/bench/ on first use; never thumbor), runs every phase on tiny images, prints the
tables and writes Markdown and JSON."""

import json
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_benchmark_smoke_run(tmp_path):
    metrics_folders = set(Path(tempfile.gettempdir()).glob("resizer-metrics-*"))
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--smoke", "--out", str(tmp_path),
                          "--soak-jobs", "30"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "### End to end" in run.stdout and "| jobs/s |" in run.stdout and "**Goals (issue 14)**" in run.stdout
    (result,) = tmp_path.glob("*.json")
    data = json.loads(result.read_text())
    cases = {(r["workload"], r["system"], r["mode"]) for r in data["e2e"]}
    assert cases == {(w, s, m) for w in ("png1", "2.8mp-100")
                     for s, m in (("ours", "polling"), ("ours", "long poll"), ("ours", "one request"),
                                  ("original", "polling"), ("original-gunicorn", "polling"))}
    for row in data["e2e"]:
        assert row["failures"] == 0 and row["jobs"] == 16 and row["jobs_per_s"] > 0, row
        cpu = row["cpu_ms_per_job"]
        assert cpu["api"] > 0 and cpu["workers"] > 0 and cpu["redis"] > 0 and cpu["client"] > 0, row
        if row["system"] == "ours":
            assert cpu["storage"] > 0, row
        else:
            assert cpu["storage"] is None, row  # the original stores to a local file: no storage server
    assert [g["workload"] for g in data_ratios(data)] == ["png1"]
    floor = data["floor"]  # the stack's floor, measured in the run: every part of it ran
    assert floor["rq"]["succeeded"] == 51 and floor["rq"]["worker_ms"] > 0, floor["rq"]
    assert set(floor["transport"]) == {"png1|polling", "2.8mp-100|long poll"}  # the goals' cases a smoke run has
    assert all(c["jobs"] == 16 and c["api_ms"] > 0 and c["client_ms"] > 0 for c in floor["transport"].values())
    # No gunicorn of the run read the API's gunicorn.conf.py but ours: the original's did (it was started from the
    # checkout), with our access log and hooks, and left a metrics folder in /tmp at every run.
    assert set(Path(tempfile.gettempdir()).glob("resizer-metrics-*")) <= metrics_folders
    assert "Ceiling estimate: " in run.stdout and "| ceiling estimate |" in run.stdout
    # the 1×1 goal's row carries its ratio against the original under gunicorn too, with its own verdict
    (png1_goal,) = [line for line in run.stdout.splitlines() if line.startswith("| 1×1 PNG → 100×100 | ours, polling")]
    assert "| against the original on gunicorn |" in run.stdout
    assert png1_goal.endswith("× (pass) |") or png1_goal.endswith("× (FAIL) |"), png1_goal
    for backlog in data["backlog"]:
        assert backlog["succeeded"] == backlog["jobs"] == 50 and backlog["lost"] == 0, backlog
        assert backlog["unfinished"] == 0, backlog
    (original,) = [b for b in data["backlog"] if b["system"] == "original"]
    assert original["bytes_per_job"] > original["image_bytes"]  # the design under test: base64 in the message
    assert {b["system"] for b in data["backlog"]} == {"ours", "original"}
    assert data["soak"]["lost"] == 0 and data["soak"]["unfinished"] == 0 and data["soak"]["duplicated_outputs"] == 0
    assert data["soak"]["missing_outputs"] == 0
    assert data["soak"]["succeeded"] == data["soak"]["accepted"] == 30
    assert data["post"]["count"] == 40 and data["post"]["load_jobs_per_s"] > 0  # uploads under load, really
    assert data["post"]["load_errors"] == 0
    assert data["post"]["saturated"]["uploads_per_s"] > 0 and data["memory"]["worker_peak_mb"] > 0
    pauses = data["post"]["redis_pauses"]  # read from ours' Redis during the uploads
    assert pauses["threshold_ms"] == 40 and all(name.startswith("aof") for name in pauses["events"])
    assert "append-only file" in run.stdout
    assert list(tmp_path.glob("*.md"))


def _row(workload, system, mode, rate, rnd=0):
    """An end-to-end result row as the benchmark records it, for the report's tests."""
    return {"workload": workload, "system": system, "mode": mode, "round": rnd, "jobs_per_s": rate, "p50_ms": 1,
            "p99_ms": 2, "failures": 0, "cpu_ms_per_job": {"total": 1.0}}


def test_the_report_gives_the_one_request_ratios_beside_the_long_poll_goals():
    sys.path.insert(0, str(ROOT))
    from bench.report import comparison

    rows = [_row("2.8mp-100", "thumbor", "sync", 40.0), _row("2.8mp-100", "ours", "long poll", 50.0),
            _row("2.8mp-100", "ours", "one request", 62.0)]
    text = "\n".join(comparison({"e2e": rows}))
    assert "| 2.8 MP JPEG → 100×100 | ours, long poll / thumbor | 1.25× | ≥ 1.5× | **FAIL** |" in text  # the goal
    assert "with ours in one request (the goals above are the long poll's): 2.8 MP JPEG → 100×100 1.55×." in text
    assert "| — | — | 40.0 | — | 50.0 | 62.0 | — |" in text  # its own column


def test_the_goals_against_the_original_are_also_given_against_its_app_under_gunicorn():
    """The goals' baseline is the original as it ran (Flask's own server); the same app under gunicorn, a production
    server, is the stricter comparison, and the report gives both, each with its own verdict."""
    sys.path.insert(0, str(ROOT))
    from bench.report import comparison

    rows = [_row("png1", "original", "polling", 50.0), _row("png1", "original-gunicorn", "polling", 120.0),
            _row("png1", "ours", "polling", 150.0)]
    text = "\n".join(comparison({"e2e": rows}))
    # the goal, and in its last column the same ratio against the original under gunicorn, with its own verdict
    assert "| 1×1 PNG → 100×100 | ours, polling / original | 3.00× | ≥ 2× | pass | — | 1.25× (FAIL) |" in text
    assert "| 1×1 PNG → 100×100 | 50.0 | 120.0 | — | 150.0 | — | — | — |" in text  # a column of its own
    # a run with the original under gunicorn only still gives its ratios
    alone = "\n".join(comparison({"e2e": rows[1:]}))
    assert "**Goals" not in alone
    assert "1×1 PNG → 100×100 ours, polling / original-gunicorn 1.25× (goal 2×: FAIL)" in alone


def test_a_goals_ceiling_estimate_is_the_machines_cpu_over_what_a_job_of_the_design_cannot_skip():
    sys.path.insert(0, str(ROOT))
    from bench.report import comparison, ratios

    rows = [_row("png1", "original", "polling", 125.0), _row("png1", "ours", "polling", 90.0),
            _row("png1", "original", "polling", 160.0, 1), _row("png1", "ours", "polling", 100.0, 1),
            _row("2.8mp-100", "thumbor", "sync", 50.0), _row("2.8mp-100", "ours", "long poll", 60.0),
            _row("12mp-1024", "thumbor", "sync", 20.0), _row("12mp-1024", "ours", "long poll", 30.0)]
    floor = {"rq": {"job_ms": 3.0, "enqueue_ms": 0.3, "worker_ms": 2.0, "redis_ms": 0.7},
             "transport": {"png1|polling": {"api_ms": 1.5, "client_ms": 1.5},
                           "2.8mp-100|long poll": {"api_ms": 2.0, "client_ms": 1.0},
                           "12mp-1024|long poll": {"api_ms": 5.0, "client_ms": 2.0}}}
    results = {"e2e": rows, "cores": 4, "floor": floor,
               "kernel_cpu_ms": {"png1": 2.0, "2.8mp-100": 6.0, "12mp-1024": 50.0}}
    by_workload = {g["workload"]: g for g in ratios(rows, results=results)}
    # png1: 4 cores' 4000 ms a second / (kernel 2 + RQ 3 + requests 1.5 + client 1.5 ms) = 500 jobs/s, over the
    # original's 125 and 160 in the two rounds: 4.0 and 3.125, median 3.5625
    assert by_workload["png1"]["bound"] == pytest.approx((4.0 + 3.125) / 2)
    # 2.8 MP: 4000 / (6 + 3 + 2 + 1) = 333.3 jobs/s over thumbor's 50
    assert by_workload["2.8mp-100"]["bound"] == pytest.approx(4000 / 12 / 50)
    # 12 MP -> 1024: 4000 / 60 = 66.7 jobs/s over 20 = 3.33x; ours measured 1.5x: below it, so it is shown
    text = "\n".join(comparison(results))
    assert "| 2.8 MP JPEG → 100×100 | ours, long poll / thumbor | 1.20× | ≥ 1.5× | **FAIL** | 6.67× |" in text
    assert "| 12 MP JPEG → 1024 wide | ours, long poll / thumbor | 1.50× | ≥ 1.5× | pass | 3.33× |" in text
    assert "2.8 MP JPEG → 100×100 (long poll) 12.0 ms" in text and "an RQ job with nothing in it (3.0 ms" in text
    # a round that beats its estimate shows the estimate wrong: it is not reported as a ceiling
    fast = [dict(r, jobs_per_s=400.0) if r["workload"] == "2.8mp-100" and r["system"] == "ours" else r for r in rows]
    beaten = {g["workload"]: g for g in ratios(fast, results=results)}["2.8mp-100"]
    assert beaten["bound_beaten"] and "a round beat it" in "\n".join(comparison({**results, "e2e": fast}))
    # no floor for a workload (not measured, or an older run): no estimate claimed
    assert by_workload["png1"]["bound"] is not None
    del floor["transport"]["png1|polling"]
    assert {g["workload"]: g for g in ratios(rows, results=results)}["png1"]["bound"] is None
    assert all(g["bound"] is None for g in ratios(rows))
    assert "| ≥ 2× | **FAIL** | — |" in "\n".join(comparison({"e2e": rows}))


@pytest.mark.e2e
def test_the_stack_floor_runs_every_rq_job_and_drives_the_services_requests_with_the_load_client(tmp_path):
    sys.path.insert(0, str(ROOT))
    from bench.bench import make_images
    from bench.floor import rq_floor, stack_floor
    from bench.load import WORKLOADS

    png = make_images(smoke=True)["1x1 PNG"]
    png1 = next(w for w in WORKLOADS if w.key == "png1")
    floor = stack_floor(tmp_path, [(png1, "polling", png), (png1, "long poll", png)], 30, 5.0, transport_jobs=16)
    assert floor["rq"]["succeeded"] == 31 and floor["rq"]["worker_ms"] > 0 and floor["rq"]["redis_ms"] > 0
    assert set(floor["transport"]) == {"png1|polling", "png1|long poll"}
    for case in floor["transport"].values():
        assert case["jobs"] == 16 and case["api_ms"] > 0 and case["client_ms"] > 0, case
    # a job that fails costs more than one that did nothing: the floor refuses to count it
    with pytest.raises(RuntimeError, match="ran 0 of 6 jobs"):
        rq_floor(tmp_path / "failing", 5, func="json.loads")  # no argument: TypeError in every job


def data_ratios(data):
    sys.path.insert(0, str(ROOT))
    from bench.report import ratios

    return ratios(data["e2e"])


def test_the_clients_cpu_is_measured_below_a_clock_tick():
    """A smoke run's few small jobs cost the client less than one 10 ms tick, which /proc/self/stat counts in."""
    import time

    from bench.procs import self_cpu_seconds

    for _ in range(3):
        before, start = self_cpu_seconds(), time.perf_counter()
        while time.perf_counter() - start < 0.003:  # 3 ms of CPU
            pass
        assert 0 < self_cpu_seconds() - before < 0.5


def test_the_cpu_meter_keeps_what_a_process_ran_before_it_went_away():
    """A worker recycled inside the window (ours restarts one past WORKER_MAX_RSS_MB or WORKER_MAX_JOBS) is charged
    what it ran, also when its pid is still asked for after it was reaped (the supervisor restarts it a moment later)."""
    import time

    from bench.procs import CpuMeter

    child = subprocess.Popen([sys.executable, "-c",
                              "import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
                              "sys.stdin.read()"], stdin=subprocess.PIPE)
    meter = CpuMeter(lambda: {"workers": [child.pid]}, interval=0.05)
    meter.open()
    deadline = time.monotonic() + 30
    while max((cpu for (pid, _), (_, cpu) in meter.last.items() if pid == child.pid), default=0.0) < 0.35 \
            and time.monotonic() < deadline:
        time.sleep(0.05)  # until a sample has seen it run its 0.4 s
    child.stdin.close()
    child.wait()  # reaped: its /proc entry is gone while the roles still name it
    time.sleep(0.2)  # a few samples of the gone pid
    assert meter.close()["workers"] >= 0.3


def test_the_cpu_meter_charges_a_process_for_its_threads_that_ended():
    """A server that runs each connection in a thread of its own (Flask's, the original design's as it ran) does
    its work in threads that end: summing its live threads alone charged it almost nothing (0.025 s of 0.5)."""
    from bench.procs import CpuMeter

    burn = ("import sys, threading, time\n"
            "def burn():\n"
            "    t = time.thread_time()\n"
            "    while time.thread_time() - t < 0.05: pass\n"
            "sys.stdin.readline()\n"  # not before the meter's first sample
            "for _ in range(10):\n"
            "    th = threading.Thread(target=burn); th.start(); th.join()\n"
            "print('done', flush=True)\n"
            "sys.stdin.read()\n")
    with _python(burn) as child:
        meter = CpuMeter(lambda: {"api": [child.pid]}, interval=0.05)
        meter.open()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"  # ten threads ran 0.05 s of CPU each, and ended
        assert 0.45 <= meter.close()["api"] < 0.75


def test_a_process_is_not_charged_for_the_children_it_reaped():
    """Children are charged as processes of their own while they live (each role's tree is sampled); once reaped,
    their CPU must not come back as their parent's, or it would count twice."""
    from bench.procs import _run_seconds

    parent = ("import subprocess, sys\n"
              "subprocess.run([sys.executable, '-c', 'import time\\nt = time.process_time()\\n"
              "while time.process_time() - t < 0.3: pass'], check=True)\n"
              "print('reaped', flush=True)\n"
              "sys.stdin.read()\n")
    with _python(parent) as child:
        assert child.stdout.readline().strip() == "reaped"  # its child burned 0.3 s and was waited for
        own = _run_seconds(child.pid)
        assert own is not None and own < 0.2, own  # its own start-up only


@contextmanager
def _python(code: str):
    """A Python child running ``code``, its stdin and stdout piped; closing its stdin ends it."""
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield child
    finally:
        child.stdin.close()
        child.wait()
        child.stdout.close()


@pytest.fixture
def fsyncing_redis(tmp_path):
    """A redis-server of its own that fsyncs its append-only file before every reply, as ours runs in the bench."""
    import redis as redis_lib

    from tests.conftest import private_redis_server

    with private_redis_server(tmp_path, "--appendonly", "yes", "--appendfsync", "always") as url:
        client = redis_lib.Redis.from_url(url)
        yield url, client
        client.close()


def test_persistence_pauses_reports_the_append_only_files_stalls_and_nothing_else(fsyncing_redis):
    """The POST phase reports where Redis stalled on its AOF: its LATENCY monitor's aof-* events, not a slow
    command's; and the monitor is off again afterwards."""
    from bench.phases import PersistencePauses
    from tests.conftest import wait_until

    url, client = fsyncing_redis
    slow_script = ("local s = redis.call('TIME') local t0 = s[1] * 1e6 + s[2] "
                   "repeat local n = redis.call('TIME') until n[1] * 1e6 + n[2] - t0 > 30000 return 1")
    with PersistencePauses(url, threshold_ms=1) as pauses:
        client.eval(slow_script, 0)  # a slow command: LATENCY records it as "command"
        big = b"x" * (16 << 20)

        def an_aof_event() -> dict:
            client.set("big", big)  # 16 MB written and fsynced before the reply: at least 1 ms on any disk
            return pauses.read()["events"]

        events = wait_until(an_aof_event, "an append-only-file event of 1 ms or more", timeout=30, interval=0)
        latest = {e[0].decode() for e in client.execute_command("LATENCY", "LATEST")}
        assert "command" in latest and "command" not in events
        assert set(events) <= {n for n in latest if n.startswith("aof")} and events
        for event in events.values():
            assert event["seconds"] >= 1 and event["max_ms"] >= 1
    assert client.config_get("latency-monitor-threshold") == {"latency-monitor-threshold": "0"}


def test_the_report_says_where_redis_paused_during_the_uploads():
    sys.path.insert(0, str(ROOT))
    from bench.report import _pauses

    assert _pauses(None) == ""
    assert "never held it up 40 ms" in _pauses({"threshold_ms": 40, "events": {}})
    said = _pauses({"threshold_ms": 40, "events": {"aof-fsync-always": {"seconds": 2, "max_ms": 279}}})
    assert "`aof-fsync-always` in 2 s (longest 279 ms)" in said and "operations.md" in said


def test_a_job_the_service_forgot_is_lost_and_one_still_queued_at_the_deadline_is_unfinished():
    from bench.phases import _lost_or_unfinished

    assert _lost_or_unfinished({"a": "404", "b": "never ended", "c": "never ended"}) == {
        "lost": 1, "unfinished": 2, "deadline_s": 600}
    assert _lost_or_unfinished({}) == {"lost": 0, "unfinished": 0, "deadline_s": 600}
