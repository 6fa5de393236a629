"""What every kernel does: run the executor on a kernel that has the IPsec data plane (this
machine's own, or a User-Mode Linux guest), in a run directory of its own."""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from lab import cleanup
from lab.contract import PROGRESS
from lab.errors import ProviderError

ProgressFn = Callable[[dict], None]
# (guest work folder, seeded disk present) -> shell lines the lab kernel's init runs before the
# executor: how a backend that needs a daemon in the lab kernel (Docker) gets it started.
BootLines = Callable[[str, bool], str]


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


def new_run_dir() -> tuple[str, RunFiles]:
    """A fresh run directory under the state directory, owned by this process (owner.pid) so
    that `lab cleanup` can tell a killed run's leftovers from a live one's."""
    run_id = secrets.token_hex(3)
    rundir = cleanup.state_dir() / run_id
    rundir.mkdir(parents=True, mode=0o700)
    (rundir / "owner.pid").write_text(str(os.getpid()))
    files = RunFiles(str(rundir))
    os.makedirs(files.outdir)
    return run_id, files


def dispatch_line(line: str, on_progress: ProgressFn, console) -> None:
    """Executor progress goes to the caller; everything else (kernel, init) to the console log."""
    if line.startswith(PROGRESS):
        try:
            on_progress(json.loads(line[len(PROGRESS):]))
            return
        except json.JSONDecodeError:
            pass
    console.write(line if line.endswith("\n") else line + "\n")


DEFAULT_RUN_TIMEOUT = 900.0  # seconds; the slowest shipped design (80 hosts, loaded) takes ~4 min


def run_timeout(environ=os.environ) -> float:
    """How long one run may take before its kernel is stopped as hung (`LAB_RUN_TIMEOUT`)."""
    raw = environ.get("LAB_RUN_TIMEOUT", "")
    if not raw:
        return DEFAULT_RUN_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise ProviderError(f"LAB_RUN_TIMEOUT: {raw!r} is not a number of seconds above 0")
    return seconds


class Deadline:
    """Stops a hung run: `kill` is called once when `seconds` pass; `expired` says it happened.
    Without it a guest whose executor hangs would keep the command (and a CI job) forever."""

    def __init__(self, seconds: float, kill: Callable[[], None]):
        self.seconds, self.expired = seconds, False
        self._timer = threading.Timer(seconds, self._fire, args=(kill,))
        self._timer.daemon = True

    def _fire(self, kill: Callable[[], None]) -> None:
        self.expired = True
        kill()

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    def error(self, console: str) -> ProviderError:
        return ProviderError(f"the run did not finish within {self.seconds:.0f} s (LAB_RUN_TIMEOUT) and was "
                             f"stopped; the last lines of {console} say where it hung")
