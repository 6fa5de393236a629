"""`lab verify` as a user runs it: exit status, naming what failed, and Ctrl-C in the middle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from interrupt import interrupt_when, kill_9_when

from lab import cleanup

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "topologies" / "exchange-fe-be-http.yaml"


def lab(*args, **kw):
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, cwd=ROOT,
                          check=False, **kw)  # the tests assert on the exit status


def test_a_wrong_expectation_exits_1_and_names_the_flow(tmp_path):
    topo = tmp_path / "changed.yaml"
    topo.write_text(DEFAULT.read_text().replace(
        "{from: fe, to: be, service: smtp, result: clear}", "{from: fe, to: be, service: smtp, result: esp}"))
    res = lab("verify", str(topo), "--report", str(tmp_path / "report"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAILED fe->be:smtp" in res.stdout
    assert "expected esp, observed clear" in res.stdout
    assert (tmp_path / "report" / "report.html").exists()


def test_ctrl_c_in_the_middle_leaves_nothing(tmp_path):
    interrupt_when(["verify", str(DEFAULT), "--report", str(tmp_path / "r")], marker="probes")


def test_a_run_that_fails_in_the_guest_keeps_its_console_and_names_it(tmp_path):
    # 16 MB is too little for the guest kernel: its setup refuses to boot ("Too few physical
    # memory", 13-17 MB, every run). 18-20 MB was the boundary: a panic at boot, the OOM killer
    # taking the executor, or (once, at 20 MB) a guest thrashing past the test's 120 s. Each is
    # a real failure in the guest, and the console must say which.
    report = tmp_path / "failed"
    res = lab("verify", str(DEFAULT), "--report", str(report), env={**os.environ, "LAB_UML_MEM": "16M"},
              timeout=120)
    assert res.returncode == 3, res.stdout + res.stderr
    console = report / "logs" / "console.log"
    assert f"console log: {console}" in res.stderr, res.stderr
    text = console.read_text(errors="replace") if console.exists() else ""
    assert any(w in text for w in ("Too few physical memory", "Kernel panic", "Out of memory")), text[-2000:]


def test_kill_9_of_lab_verify_takes_the_guest_with_it(tmp_path):
    """UML drops PR_SET_PDEATHSIG; the watchdog (lab.kernels.uml._watchdog) must end it. Without
    it the guest went on for about 10 s; with it, it went within 1 s until a run at a load of 7
    (a suite beside other labs) took 1.28 s: the bound is the behaviour, not a speed figure."""
    run_ids, gone_after = kill_9_when(["verify", str(DEFAULT), "--report", str(tmp_path / "r")], "bring-up")
    assert not cleanup.processes_of(run_ids), "the guest survived kill -9 of its lab"
    assert gone_after < 3.0, f"the guest survived {gone_after:.2f} s"
    cleanup.sweep()  # the run directory of a killed run: what `lab cleanup` is for
