"""`lab verify` as a user runs it: exit status, naming what failed, and Ctrl-C in the middle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab import cleanup

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "topologies" / "exchange-fe-be-http.yaml"


def lab(*args, **kw):
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, cwd=ROOT, **kw)


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
    proc = subprocess.Popen([sys.executable, "-m", "lab", "verify", str(DEFAULT), "--report", str(tmp_path / "r")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = []
    for line in proc.stdout:  # interrupt once the probes are in flight
        seen.append(line)
        if "probes" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen) + rest
    run_ids = {line.split("run ")[1].split()[0] for line in seen if " start " in line and "run " in line}
    assert run_ids, "".join(seen)
    deadline = time.monotonic() + 5
    while cleanup.processes_of(run_ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not cleanup.processes_of(run_ids), "guest or daemons survived Ctrl-C"
    assert not any((cleanup.state_dir() / r).exists() for r in run_ids), "run directory survived Ctrl-C"
    assert not cleanup.namespaces_of(run_ids)
