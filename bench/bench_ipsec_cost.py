#!/usr/bin/env python3
"""B16: the throughput cost of AH and ESP variants against clear, on the same path.

Runs topologies/ipsec-cost.yaml (or another topology with `bulk:` expectations) N times and
writes, per flow, the median throughput, its range and the ratio to the clear flow's median to
bench/results/ipsec-cost.json. Not a test: the figures move with the machine's load.

usage: bench/bench_ipsec_cost.py [TOPOLOGY] [--runs N] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

from results_file import write_results

from lab import runner


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("topology", nargs="?", default="topologies/ipsec-cost.yaml")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="bench/results/ipsec-cost.json")
    args = ap.parse_args()
    samples: dict[str, list[float]] = {}
    observed: dict[str, str] = {}
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="lab-bench-") as tmp:
            report = runner.run(args.topology, tmp)
        for v in report.verdicts:
            if v.evidence.throughput_mbps is not None:
                samples.setdefault(v.id, []).append(v.evidence.throughput_mbps)
                observed[v.id] = v.observed
        print(f"run {i + 1}/{args.runs}: " + ", ".join(f"{k.split(':')[-1]} {s[-1]:g}" for k, s in samples.items()),
              file=sys.stderr)
    clear = [statistics.median(s) for k, s in samples.items() if observed[k] == "clear"]
    base = clear[0] if clear else None
    rows = {}
    for flow, s in samples.items():
        med = statistics.median(s)
        rows[flow] = {"protection": observed[flow], "median_mbps": round(med, 1), "min": min(s), "max": max(s),
                      "of_clear": round(med / base, 3) if base else None, "samples": s}
    write_results(args.out, {"topology": args.topology, "runs": args.runs, "flows": rows})
    print(f"{'flow':<22}{'protection':<11}{'median Mbit/s':>14}{'min':>9}{'max':>9}{'of clear':>10}")
    for flow, r in rows.items():
        print(f"{flow:<22}{r['protection']:<11}{r['median_mbps']:>14}{r['min']:>9}{r['max']:>9}{r['of_clear']:>10}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
