"""Ctrl-C (or kill -9) a real `lab` run at a given moment and check that nothing of it survives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab import cleanup

ROOT = Path(__file__).resolve().parent.parent


def _run_ids(lines: list[str]) -> set[str]:
    """The run ids the lab's progress named (`start  run <id> on ...`)."""
    return {line.split("run ")[1].split()[0] for line in lines if " start " in line and "run " in line}


def _start_until(argv: list[str], marker: str, **popen) -> tuple[subprocess.Popen, list[str]]:
    """Start `python -m lab ARGV` and read its output until a line contains `marker`."""
    proc = subprocess.Popen([sys.executable, "-m", "lab", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            break
    return proc, seen


def interrupt_when(argv: list[str], marker: str) -> set[str]:
    """Run `python -m lab ARGV`, send SIGINT to its group once a line contains `marker`, and
    assert exit 130 with no process, run directory or namespace of the run left. Returns the
    run ids, for further checks."""
    __tracebackhide__ = True
    # Ctrl-C in a terminal reaches a process whose SIGINT is at its default. A suite started in
    # the background of a shell without job control inherits SIGINT ignored, and Python then
    # never raises KeyboardInterrupt: that would test how the suite was started, not the lab.
    proc, seen = _start_until(argv, marker, start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.killpg(proc.pid, signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen) + rest
    run_ids = _run_ids(seen)
    assert run_ids, "".join(seen)
    deadline = time.monotonic() + 5
    while cleanup.processes_of(run_ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not cleanup.processes_of(run_ids), "guest, daemons or containers survived Ctrl-C"
    assert not any((cleanup.state_dir() / r).exists() for r in run_ids), "run directory survived Ctrl-C"
    # Namespaces live in the lab kernel. A UML guest's are in its own memory and die with it,
    # and the guest is a process found above (umid=lab-<run>); a host kernel's are here.
    assert not cleanup.namespaces_of(run_ids), "namespaces survived Ctrl-C on this host's kernel"
    return run_ids


def kill_9_when(argv: list[str], marker: str, wait: float = 5.0) -> tuple[set[str], float]:
    """Run `python -m lab ARGV`, SIGKILL it (the lab process alone, as a crash or the OOM killer
    would) once a line contains `marker`, and time until no process of the run is left: the
    guest must go with it (the watchdog in lab.kernels.uml). Returns the run ids and the
    seconds; the killed run's directory is for `lab cleanup`, which the caller runs."""
    proc, seen = _start_until(argv, marker)
    run_ids = _run_ids(seen)
    assert run_ids and cleanup.processes_of(run_ids), "no guest to kill"
    proc.kill()
    killed = time.monotonic()
    proc.wait()
    while cleanup.processes_of(run_ids) and time.monotonic() - killed < wait:
        time.sleep(0.01)
    return run_ids, time.monotonic() - killed
