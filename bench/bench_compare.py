#!/usr/bin/env python3
"""Before/after: the same topologies run by two checkouts, interleaved, so that both see the
same machine (its load changes by the minute). Medians and ranges per phase, and whether
every verdict held, written to a file.

usage: bench/bench_compare.py --before PYTHON --after PYTHON [--runs N] [--provider docker] [--out FILE] TOPOLOGY...

PYTHON is the interpreter of a checkout's venv (its editable install decides the code), e.g.
  git worktree add /var/tmp/lab-before main~5 && cd /var/tmp/lab-before && make setup
  bench/bench_compare.py --before /var/tmp/lab-before/.venv/bin/python --after .venv/bin/python \\
      --runs 5 topologies/exchange-fe-be-http.yaml topologies/firewall-missing-esp.yaml
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from results_file import write_results

HERE = Path(__file__).resolve().parent
PHASES = ["guest_boot", "bring_up", "probes", "collect", "teardown", "judge_and_report", "total", "command"]


def one(python: str, topology: str, provider: str = "netns") -> dict:
    res = subprocess.run([python, str(HERE / "one_run.py"), topology, provider], capture_output=True, text=True)
    lines = [x for x in res.stdout.splitlines() if x.startswith("{")]
    if res.returncode != 0 or not lines:
        return {"failed": (res.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def summary(samples: list[dict]) -> dict:
    ok = [s for s in samples if "timings" in s]
    out = {"runs": len(samples), "all_verdicts_right": sum(s["held"] == s["total"] and not s["errors"] for s in ok),
           "wrong": sorted({w for s in ok for w in s["wrong"]}), "errors": sorted({e for s in ok for e in s["errors"]}),
           "failed_runs": [s["failed"] for s in samples if "failed" in s]}
    for phase in PHASES:
        values = [s["timings"].get(phase, 0.0) for s in ok]
        if values:
            out[phase] = {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
                          "max": round(max(values), 2)}
    ike = [x for s in ok for x in s.get("ike_seconds", [])]
    if ike:
        out["ike_seconds"] = {"median": round(statistics.median(ike), 2), "min": min(ike), "max": max(ike)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("topologies", nargs="+")
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--provider", default="netns", help="netns or docker (each run's docker figures are kept in the samples)")
    ap.add_argument("--out", default="bench/results/compare.json")
    args = ap.parse_args()
    samples: dict[str, dict[str, list]] = {t: {"before": [], "after": []} for t in args.topologies}
    for i in range(args.runs):
        for t in args.topologies:
            for side in ("before", "after") if i % 2 == 0 else ("after", "before"):  # interleaved
                s = one(getattr(args, side), t, args.provider)
                samples[t][side].append(s)
                total = s.get("timings", {}).get("total")
                print(f"run {i + 1}/{args.runs} {side:6} {Path(t).stem}: "
                      + (f"{total:.2f} s, {s['held']}/{s['total']}" if total else s.get("failed", "?")), file=sys.stderr)
    result = {t: {side: summary(v) for side, v in sides.items()} for t, sides in samples.items()}
    write_results(args.out, {"runs": args.runs, "provider": args.provider, "before": args.before, "after": args.after,
                             "summary": result, "samples": samples})
    print("| topology | phase | before median (range) | after median (range) |")
    print("|---|---|---|---|")
    for t, sides in result.items():
        for phase in PHASES:
            b, a = sides["before"].get(phase), sides["after"].get(phase)
            if b and a:
                print(f"| {Path(t).stem} | {phase} | {b['median']:.2f} ({b['min']:.2f}-{b['max']:.2f}) | "
                      f"{a['median']:.2f} ({a['min']:.2f}-{a['max']:.2f}) |")
        print(f"| {Path(t).stem} | runs with every verdict right | {sides['before']['all_verdicts_right']}/{args.runs} | "
              f"{sides['after']['all_verdicts_right']}/{args.runs} |")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
