"""`lab verify` as a user runs it: exit status, naming what failed, and Ctrl-C in the middle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from interrupt import interrupt_when

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
