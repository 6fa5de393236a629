"""Run the executor directly on this machine's kernel (when it has ESP and AH)."""

from __future__ import annotations

import os
import subprocess
import sys

from lab.contract import Plan
from lab.kernels.base import Deadline, ProgressFn, RunFiles, dispatch_line, run_timeout


class HostKernel:
    name = "host"
    boot_seconds = 0.0

    def __init__(self, run_id: str, files: RunFiles, plan: Plan | None = None):
        self.run_id = run_id
        self.plan = plan  # read by the executor from files.plan; kept for symmetry with the guest
        self.files = files

    def run(self, on_progress: ProgressFn) -> int:
        argv = [sys.executable, "-m", "lab.guest.executor", self.files.plan, self.files.secrets,
                os.path.join(self.files.rundir, "work")]
        env = dict(os.environ, LAB_RUN_ID=self.run_id, PYTHONUNBUFFERED="1")
        timeout = run_timeout()
        with open(self.files.console, "w") as console:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            # SIGTERM: the executor tears down what it started, then exits (lab.guest.executor).
            deadline = Deadline(timeout, lambda: _stop(proc))
            try:
                with deadline:
                    for line in proc.stdout:
                        dispatch_line(line, on_progress, console)
                    rc = proc.wait()
                if deadline.expired:
                    raise deadline.error("the console log")
                return rc
            except KeyboardInterrupt:
                # The executor got the same SIGINT and is tearing down: let it finish.
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise


def _stop(proc: subprocess.Popen) -> None:
    """A hung executor: SIGTERM lets it tear down what it started; SIGKILL if that hangs too."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
