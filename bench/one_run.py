#!/usr/bin/env python3
"""One `lab verify` run of a topology, its figures as one JSON line on stdout.

Run with the Python of the checkout to measure (its editable install decides which code
runs): bench_compare.py starts it with the `before` and the `after` interpreter in turn.
It times the command a user types, as a process of its own (`command`: interpreter start,
imports, the run, the report and the tables printed), and reads the run's own phases and
`total` (lab.runner.run, from loading the topology to the judged report) from result.json.

usage: PYTHON bench/one_run.py TOPOLOGY [PROVIDER]

With the Docker provider the line also carries executor.json's `docker` figures, its
`bring_up_steps` and `boot_marks`: where a container run's time went.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("guest_boot", "bring_up", "probes", "collect", "teardown")


def main() -> int:
    topology = sys.argv[1]
    provider = sys.argv[2] if len(sys.argv) > 2 else "netns"
    with tempfile.TemporaryDirectory(prefix="lab-bench-") as report_dir:
        t0 = time.monotonic()
        # -P: the checkout of this interpreter, never one in the working directory
        res = subprocess.run([sys.executable, "-P", "-m", "lab", "verify", topology, "--report", report_dir, "--provider", provider],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        command = time.monotonic() - t0
        result = Path(report_dir, "result.json")
        if not result.exists():
            print((res.stderr.strip().splitlines() or ["no result.json"])[-1], file=sys.stderr)
            return 1
        report = json.loads(result.read_text())
        raw_path = Path(report_dir, "executor.json")
        raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    t = dict(report["timings"])
    t["judge_and_report"] = round(t["total"] - sum(t.get(k, 0.0) for k in PHASES), 3)
    t["command"] = round(command, 3)
    verdicts = report["verdicts"]
    ike = [v["evidence"]["ike_seconds"] for v in verdicts
           if v["evidence"].get("ike_seconds") and str(v["observed"]).startswith(("esp", "ah"))]
    print(json.dumps({"timings": t, "held": sum(v["ok"] for v in verdicts), "total": len(verdicts),
                      "errors": report["errors"], "wrong": [f"{v['id']}: {v['observed']}" for v in verdicts if not v["ok"]],
                      "ike_seconds": ike, "load": os.getloadavg()[0],
                      **({k: raw.get(k) for k in ("docker", "bring_up_steps", "boot_marks")} if provider == "docker" else {})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
