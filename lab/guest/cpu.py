"""Where the lab kernel's CPU went, step by step: the guest has one CPU, and with many hosts
every step's time is CPU time (charon start-up, processes, the executor's own threads).

Runs inside the lab kernel: /proc/stat for the whole kernel, /proc/PID/stat for the charons,
os.times() for this executor. Cheap (a few reads per step), so every run records it.
"""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def _busy() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / _TICK  # all but idle and iowait


def _process(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0  # gone already (teardown)
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def sample(daemon_pids: list[int]) -> dict[str, float]:
    me = os.times()
    return {"busy": _busy(), "charons": sum(_process(p) for p in daemon_pids),
            "executor": me.user + me.system, "processes": me.children_user + me.children_system}


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds between two samples: the kernel's busy time, the charons', this executor's
    own, and that of the short processes it waited for (ip, tc...)."""
    return {k: round(max(0.0, after[k] - before[k]), 2) for k in after}
