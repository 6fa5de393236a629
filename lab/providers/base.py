"""What every provider does: run the executor on a kernel that has the IPsec data plane."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from lab.guest import PROGRESS

ProgressFn = Callable[[dict], None]


@dataclass
class RunFiles:
    """The files one run hands to the executor and gets back, all under one run directory."""

    rundir: str

    @property
    def plan(self) -> str:
        return os.path.join(self.rundir, "plan.json")

    @property
    def secrets(self) -> str:
        return os.path.join(self.rundir, "secrets.json")

    @property
    def outdir(self) -> str:
        return os.path.join(self.rundir, "out")

    @property
    def console(self) -> str:
        return os.path.join(self.rundir, "console.log")


def dispatch_line(line: str, on_progress: ProgressFn, console) -> None:
    """Executor progress goes to the caller; everything else (kernel, init) to the console log."""
    if line.startswith(PROGRESS):
        try:
            on_progress(json.loads(line[len(PROGRESS):]))
            return
        except json.JSONDecodeError:
            pass
    console.write(line if line.endswith("\n") else line + "\n")
