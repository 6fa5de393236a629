"""B9: every `failover:` scenario of every topology is a case. It fails when the outage exceeds
max_seconds or, with `cleartext: none`, when an unprotected packet of the service reached the VIP.
Scenarios marked `slow` (full-length Windows timers) run only with --run-slow."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import REPORTS

from lab import runner
from lab.report.failover import write_failover

def test_failover(failover_case, lab_runs):
    __tracebackhide__ = True
    path, name = failover_case
    stem = Path(path).stem
    result = runner.run_failover(path, name, str(REPORTS / stem / "failover" / name),
                                 kernel=os.environ.get("LAB_KERNEL", "auto"),
                                 provider=os.environ.get("LAB_PROVIDER", "netns"))
    results = lab_runs.failovers.setdefault(path, [])
    results.append(result)
    write_failover(results, str(REPORTS / stem / "failover"), stem)
    assert result.ok, f"{path}:{result.line}: failover {name}: {result.reason}"
    if result.mode == "crash":
        assert result.stale_sa_packets > 0, "a crash must leave the client sending into the stale SA for a while"
