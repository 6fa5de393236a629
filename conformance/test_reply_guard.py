"""The IKEv1 responder's install window, made by hand in a guest (tools/reply_guard_check.sh):
without the reply guard the responder answers an ESP request in clear; with it the reply is
held back and counted, a clear flow passes, and the reply leaves in ESP once the policies are
in. The guard's rules and modules are read from lab.compile.reply_guard, so this checks the
rules the lab installs."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_reply_guard_holds_back_the_clear_reply_of_the_install_window():
    res = subprocess.run([str(ROOT / "tools" / "reply_guard_check.sh")], capture_output=True, text=True,
                         timeout=180, check=False)  # the assertions read its exit status and lines
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert any(line.startswith("@@ window, no guard: ping unanswered") for line in lines), res.stdout
    assert any(line.startswith("@@ window, guard: ping unanswered; clear replies a refused: 0; b held back: ")
               for line in lines), res.stdout
    assert "@@ clear flow c -> b, guard: ping answered; b held back: 0" in lines
    assert "@@ b's policies in, guard: ping answered; b held back: 0" in lines
