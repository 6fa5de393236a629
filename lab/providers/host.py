"""Run the executor directly on this machine's kernel (when it has ESP and AH)."""

from __future__ import annotations

import os
import subprocess
import sys

from lab.providers.base import ProgressFn, RunFiles, dispatch_line


class HostKernel:
    name = "host"
    boot_seconds = 0.0

    def __init__(self, run_id: str, files: RunFiles):
        self.run_id = run_id
        self.files = files

    def run(self, on_progress: ProgressFn) -> int:
        argv = [sys.executable, "-m", "lab.guest.executor", self.files.plan, self.files.secrets,
                os.path.join(self.files.rundir, "work")]
        env = dict(os.environ, LAB_RUN_ID=self.run_id, PYTHONUNBUFFERED="1")
        with open(self.files.console, "w") as console:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            try:
                for line in proc.stdout:
                    dispatch_line(line, on_progress, console)
                return proc.wait()
            except KeyboardInterrupt:
                # The executor got the same SIGINT and is tearing down: let it finish.
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise
