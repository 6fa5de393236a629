"""A hung run is stopped: LAB_RUN_TIMEOUT, and the kernels' deadline that kills a whole guest."""

import os
import subprocess
import time
from types import SimpleNamespace

import pytest

from lab.errors import ProviderError
from lab.kernels import uml
from lab.kernels.base import DEFAULT_RUN_TIMEOUT, Deadline, RunFiles, run_timeout


def test_the_timeout_defaults_and_reads_the_environment():
    assert run_timeout({}) == DEFAULT_RUN_TIMEOUT
    assert run_timeout({"LAB_RUN_TIMEOUT": "42.5"}) == 42.5


@pytest.mark.parametrize("raw", ["0", "-3", "soon"])
def test_a_bad_timeout_is_one_line_naming_the_variable(raw):
    with pytest.raises(ProviderError, match=r"^LAB_RUN_TIMEOUT: .* is not a number of seconds above 0$"):
        run_timeout({"LAB_RUN_TIMEOUT": raw})


def test_a_deadline_that_is_not_reached_calls_nothing():
    called = []
    with Deadline(5, lambda: called.append(1)) as d:
        pass
    time.sleep(0.05)
    assert not d.expired and not called


def test_a_hung_guest_is_killed_with_its_whole_group(tmp_path, monkeypatch):
    # A stand-in for the UML binary: it prints, starts a child (UML is a group of processes)
    # and hangs, the way a guest whose executor never returns does.
    child_pid = tmp_path / "child.pid"
    fake = tmp_path / "linux"
    fake.write_text(f"#!/bin/sh\necho booting\nsleep 60 &\necho $! > {child_pid}\nsleep 60\n")
    fake.chmod(0o755)
    rundir = tmp_path / "run"
    rundir.mkdir()
    plan = SimpleNamespace(provider="netns", image=None, hosts=[], probes=[], failover=None)
    monkeypatch.setenv("LAB_RUN_TIMEOUT", "1")
    guest = uml.UmlGuest("r1", RunFiles(str(rundir)), uml.UmlKernel(fake, uml.STOCK_MODULES), plan)
    started = time.monotonic()
    with pytest.raises(ProviderError, match=r"did not finish within 1 s \(LAB_RUN_TIMEOUT\)"):
        guest.run(lambda event: None)
    assert time.monotonic() - started < 10
    pid = int(child_pid.read_text())
    time.sleep(0.1)
    assert not _alive(pid), "the guest's child outlived the deadline"
    assert "booting" in (rundir / "console.log").read_text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie awaiting its (dead) parent's reaper is gone for every purpose here
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(state) and not state.startswith("Z")
