"""Processes the benchmark starts itself, and the CPU each role spends, read from /proc.

Every process is started with PR_SET_PDEATHSIG (``resizer.local._die_with_parent``), so a
killed or crashed benchmark never leaves a server behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

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


def _stat_seconds(pid: int, with_reaped: bool) -> float:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0  # gone between listing and reading
    fields = raw.rsplit(")", 1)[1].split()  # the command name may hold spaces; fields start at state (3rd)
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + ((cutime + cstime) if with_reaped else 0)) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and all its descendants, live (utime+stime) and already reaped (cutime+cstime)."""
    return sum(_stat_seconds(p, with_reaped=True) for p in descendants(pid))


def self_cpu_seconds() -> float:
    """This process's own CPU (all its threads: the load client), without the children it ran."""
    return _stat_seconds(os.getpid(), with_reaped=False)


ROLES = ("api", "workers", "storage", "redis", "client")


def snapshot(roles: dict[str, list[int]]) -> dict[str, float | None]:
    """CPU seconds so far per role; ``roles`` maps a role to the root pids of its process trees (none: None)."""
    out = {role: sum(tree_cpu_seconds(pid) for pid in pids) if pids else None for role, pids in roles.items()}
    out["client"] = self_cpu_seconds()
    return out


def per_job_ms(before: dict[str, float | None], after: dict[str, float | None], jobs: int) -> dict[str, float | None]:
    """ms of CPU per job by role; None for a role the system does not have (thumbor has no Redis)."""
    ms = {role: None if after[role] is None else (after[role] - before[role]) * 1000 / max(jobs, 1) for role in after}
    ms["total"] = sum(v for v in ms.values() if v is not None)
    return ms
