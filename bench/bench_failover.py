#!/usr/bin/env python3
"""Repeat failover scenarios and write the spread of their figures to a file.

Not a test: the figures move with machine load, so this reports median, min and max of the
outage and the time to a new SA per scenario over N runs.

usage: bench/bench_failover.py [TOPOLOGY ...] [--runs N] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from results_file import write_results

from lab import runner
from lab.model.load import load_topology


def spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "spread": None}
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "spread": round(max(values) - min(values), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("topologies", nargs="*", default=["topologies/exchange-cluster-failover.yaml",
                                                      "topologies/exchange-cluster-failover-windows.yaml"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default="bench/results/failover.json")
    args = ap.parse_args()
    figures: dict[str, dict] = {}
    for path in args.topologies:
        for f in (x for x in load_topology(path).failovers if not x.slow):
            outages, new_sas = [], []
            for i in range(args.runs):
                with tempfile.TemporaryDirectory(prefix="lab-bench-") as tmp:
                    r = runner.run_failover(path, f.name, tmp)
                outages.append(r.outage)
                new_sas.append(r.new_sa_after)
                print(f"{f.name} run {i + 1}/{args.runs}: outage {r.outage}, new SA {r.new_sa_after}", file=sys.stderr)
            figures[f"{Path(path).stem}:{f.name}"] = {"profile": r.profile, "mode": f.mode, "outage": spread(outages),
                                                      "new_sa_after": spread(new_sas), "samples": outages}
    write_results(args.out, {"runs": args.runs, "figures": figures})
    print(f"{'scenario':<55}{'outage median':>14}{'min':>7}{'max':>7}{'spread':>8}")
    for name, fig in figures.items():
        o = fig["outage"]
        print(f"{name:<55}{o['median']:>14}{o['min']:>7}{o['max']:>7}{o['spread']:>8}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
