#!/usr/bin/env python3
"""Time `lab verify` on a topology, phase by phase, and write the figures to a file.

Not a test: these machines are noisy, so it runs N times and reports medians and spreads
(guest boot, bring-up, probes, collect, teardown, judging and total) rather than asserting.

usage: bench/bench_verify.py [TOPOLOGY] [--runs N] [--provider netns|docker] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from bench_compare import one
from results_file import write_results

PHASES = ["guest_boot", "bring_up", "probes", "collect", "teardown", "judge_and_report", "total", "command"]


def one_run(topology: str, provider: str = "netns") -> dict[str, float]:
    """One `lab verify` as a process of its own (bench/one_run.py): the command's wall time
    (`command`) and the run's phases and `total` from its result.json."""
    s = one(sys.executable, topology, provider)
    if "timings" not in s or s["wrong"] or s["errors"]:
        raise SystemExit(f"benchmark run failed: {s.get('failed') or s['wrong'] or s['errors']}")
    return s["timings"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("topology", nargs="?", default="topologies/exchange-fe-be-http.yaml")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=None, help="default: bench/results/verify.json (verify-docker.json with --provider docker)")
    ap.add_argument("--provider", default="netns", choices=["netns", "docker"])
    args = ap.parse_args()
    args.out = args.out or ("bench/results/verify.json" if args.provider == "netns" else f"bench/results/verify-{args.provider}.json")
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    samples = []
    for i in range(args.runs):
        samples.append(one_run(args.topology, args.provider))
        print(f"run {i + 1}/{args.runs}: total {samples[-1]['total']:.2f} s", file=sys.stderr)
    summary = {}
    for phase in PHASES:
        values = [s.get(phase, 0.0) for s in samples]
        summary[phase] = {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                          "max": round(max(values), 3)}
    write_results(args.out, {"topology": args.topology, "provider": args.provider, "runs": args.runs,
                             "load_before": load, "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
                             "summary": summary, "samples": samples})
    print(f"{'phase':<18}{'median':>8}{'min':>8}{'max':>8}")
    for phase, s in summary.items():
        print(f"{phase:<18}{s['median']:>8.2f}{s['min']:>8.2f}{s['max']:>8.2f}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
