#!/usr/bin/env python3
"""One `lab verify` run of a topology, its figures as one JSON line on stdout.

Run with the Python of the checkout to measure (its editable install decides which code
runs): bench_compare.py starts it with the `before` and the `after` interpreter in turn.

usage: PYTHON bench/one_run.py TOPOLOGY
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

from lab import runner


def main() -> int:
    topology = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="lab-bench-") as report_dir:
        t0 = time.monotonic()
        report = runner.run(topology, report_dir)
        wall = time.monotonic() - t0
    t = dict(report.timings)
    executor = sum(t.get(k, 0.0) for k in ("guest_boot", "bring_up", "probes", "collect", "teardown"))
    t["judge_and_report"] = round(wall - executor, 3)
    t["total"] = round(wall, 3)
    ike = [v.evidence.ike_seconds for v in report.verdicts
           if getattr(v.evidence, "ike_seconds", None) and v.observed.startswith(("esp", "ah"))]
    print(json.dumps({"timings": t, "held": sum(v.ok for v in report.verdicts), "total": len(report.verdicts),
                      "errors": report.errors, "wrong": [f"{v.id}: {v.observed}" for v in report.failed],
                      "ike_seconds": ike}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
