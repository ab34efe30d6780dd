"""Processes the benchmark starts itself, and the CPU each role spends, read from /proc.

Every process is started with PR_SET_PDEATHSIG (``resizer.local._die_with_parent``), so a
killed or crashed benchmark never leaves a server behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from resizer.local import _die_with_parent

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Group:
    """A few named processes started and stopped together; output goes to one log file each."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.argv: dict[str, tuple] = {}

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None,
              pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "a") as log:
            popen = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True, pass_fds=pass_fds,
                                     preexec_fn=_die_with_parent)
        self.procs[name] = popen
        self.argv[name] = (argv, env, cwd, pass_fds)
        return popen

    def respawn(self, name: str) -> subprocess.Popen:
        argv, env, cwd, pass_fds = self.argv[name]
        return self.spawn(name, argv, env, cwd, pass_fds)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def stop(self, name: str, timeout: float = 20) -> None:
        popen = self.procs.get(name)
        if popen is None or popen.poll() is not None:
            return
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)  # its own session: the process and what it forked
            popen.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):  # the reverse of the start order: clients before servers
            self.stop(name)


def descendants(pid: int) -> list[int]:
    """pid and every live process below it."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return found


def _stat_seconds(pid: int) -> float | None:
    """A process's own CPU time in clock ticks (utime + stime: all its threads, not its reaped children)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # gone between listing and reading
    fields = raw.rsplit(")", 1)[1].split()  # the command name may hold spaces; fields start at state (3rd)
    utime, stime = (int(x) for x in fields[11:13])
    return (utime + stime) / CLK_TCK


def _run_seconds(pid: int) -> float | None:
    """A process's own CPU time, all its threads (also those that ended), not its children's, in nanoseconds.

    The process's CPU-time clock (what ``clock_getcpuclockid`` gives, for any pid: ``(~pid << 3) | 2``). Not
    /proc/<pid>/stat, which counts whole clock ticks (10 ms: a role that does little per job, the original's
    Redis at ~0.4 ms a job, rounds to zero over a short window), nor its threads' schedstat, which loses a
    thread that ended (a server that runs each connection in a thread of its own, Flask's, was charged almost
    nothing). /proc/<pid>/stat only where the clock cannot be read.
    """
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9
    except OSError:
        return _stat_seconds(pid)


def _start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot): with its pid, it names one process, as pids are reused."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def self_cpu_seconds() -> float:
    """This process's own CPU (all its threads: the load client), without the children it ran, at nanosecond
    resolution (CLOCK_PROCESS_CPUTIME_ID): /proc/self/stat counts 10 ms ticks, and a smoke run's 16 small jobs
    in one request cost the client less than one."""
    return time.process_time()


class CpuMeter:
    """CPU seconds per role over a window, robust to processes that come and go inside it.

    ``roles`` is asked afresh at every sample (every 0.2 s), so a worker that exits (ours recycles one
    whose memory grew past WORKER_MAX_RSS_MB, or after WORKER_MAX_JOBS jobs) and its replacement both
    count: each process is charged what it ran inside the window as seen by its last sample (a process
    that ends loses at most its last 0.2 s; one born inside the window counts from zero).  Only each
    process's own time is summed, not the time of children it reaped, which are tracked themselves.
    """

    def __init__(self, roles: Callable[[], dict[str, list[int]]], interval: float = 0.2):
        self.roles = roles
        self.interval = interval
        # keyed by (pid, start time): a pid reused inside the window is another process
        self.base: dict[tuple[int, int], float] = {}
        self.last: dict[tuple[int, int], tuple[str, float]] = {}
        self.empty: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client0 = 0.0

    def _sample(self) -> dict[tuple[int, int], tuple[str, float]]:
        seen = {}
        for role, roots in self.roles().items():
            if not roots:
                self.empty.add(role)
            for root in roots:
                for pid in descendants(root):
                    # A process that is gone keeps the figure of the sample before (it was charged 0 s, so a
                    # worker recycled inside the window lost all it ran: 12 MP workers at 23 ms a job).
                    start = _start_time(pid)
                    if start is not None and (cpu := _run_seconds(pid)) is not None:
                        seen[(pid, start)] = (role, cpu)
        return seen

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.last.update(self._sample())

    def open(self) -> None:
        first = self._sample()
        self.base = {key: cpu for key, (_, cpu) in first.items()}
        self.last = dict(first)
        self._client0 = self_cpu_seconds()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def close(self) -> dict[str, float | None]:
        """Seconds per role since open(); None for a role with no process (thumbor has no Redis)."""
        client = self_cpu_seconds() - self._client0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.last.update(self._sample())
        out: dict[str, float | None] = {role: None for role in self.empty}
        for key, (role, cpu) in self.last.items():
            out[role] = (out.get(role) or 0.0) + max(0.0, cpu - self.base.get(key, 0.0))
        out["client"] = client
        return out


def per_job_ms(seconds: dict[str, float | None], jobs: int) -> dict[str, float | None]:
    """ms of CPU per job by role; None for a role the system does not have."""
    ms = {role: None if v is None else v * 1000 / max(jobs, 1) for role, v in seconds.items()}
    ms["total"] = sum(v for v in ms.values() if v is not None)
    return ms
