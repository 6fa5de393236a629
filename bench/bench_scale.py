#!/usr/bin/env python3
"""How the cost of `lab verify` grows with the number of hosts: designs of N hosts with N/2
front-end/back-end pairs requiring ESP (bench/scale_design.py; odd N adds a routing firewall),
N from 2 to 80. Per size: total and phases (medians, ranges), IKE's time to established, and
whether every verdict was right.

usage: bench/bench_scale.py [--sizes 2,4,10,20,41,80] [--runs N] [--python PYTHON] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from bench_compare import PHASES, one
from results_file import write_results
from scale_design import write


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2,4,10,20,41,80")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", default="bench/results/scale.json")
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        path = write(n)
        samples = [one(args.python, path) for _ in range(args.runs)]
        ok = [s for s in samples if "timings" in s]
        row = {"hosts": n, "pairs": n // 2, "runs": args.runs,
               "all_right": sum(s["held"] == s["total"] and not s["errors"] for s in ok),
               "wrong": sorted({w for s in ok for w in s["wrong"]}),
               "errors": sorted({e for s in ok for e in s["errors"]}),
               "failed_runs": [s["failed"] for s in samples if "failed" in s]}
        for phase in PHASES:
            values = [s["timings"].get(phase, 0.0) for s in ok]
            if values:
                row[phase] = {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
                              "max": round(max(values), 2)}
        ike = [x for s in ok for x in s.get("ike_seconds", [])]
        if ike:
            row["ike_seconds"] = {"median": round(statistics.median(ike), 2), "max": round(max(ike), 2)}
        rows.append(row)
        print(f"{n} hosts: {row.get('total', {}).get('median', '?')} s, every verdict right in "
              f"{row['all_right']}/{args.runs}", file=sys.stderr)
    write_results(args.out, {"python": args.python, "rows": rows})
    print("| hosts | pairs | total | guest boot | bring-up | probes | collect | teardown | IKE (median, max) | right |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        def cell(k):
            v = r.get(k)
            return f"{v['median']:.1f} ({v['min']:.1f}-{v['max']:.1f})" if v and r["runs"] > 1 else (f"{v['median']:.1f}" if v else "-")
        ike = r.get("ike_seconds")
        ike_text = f"{ike['median']:.2f}, {ike['max']:.2f}" if ike else "-"
        print(f"| {r['hosts']} | {r['pairs']} | {cell('total')} | {cell('guest_boot')} | {cell('bring_up')} | "
              f"{cell('probes')} | {cell('collect')} | {cell('teardown')} | {ike_text} | {r['all_right']}/{r['runs']} |")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
