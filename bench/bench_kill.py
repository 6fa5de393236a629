#!/usr/bin/env python3
"""How long the guest outlives `kill -9` of its `lab verify` (issue 9: within a second).

Starts `lab verify` on the default design, kills it with SIGKILL once bring-up begins, and
times until no process of that run is left (the watchdog in lab.kernels.uml kills the guest's
process group; the host kernel then reaps it). Runs N times, writes every figure and the median.

usage: bench/bench_kill.py [--runs N] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

from results_file import write_results

from lab import cleanup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conformance"))
from interrupt import kill_9_when  # noqa: E402  the conformance test's own procedure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(ROOT, "topologies", "exchange-fe-be-http.yaml")


def one_kill() -> float:
    with tempfile.TemporaryDirectory(prefix="lab-bench-kill-") as report:
        _, gone = kill_9_when(["verify", DEFAULT, "--report", report], "bring-up", wait=10)
        cleanup.sweep()  # the killed run's directory
        return round(gone, 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "kill.json"))
    args = ap.parse_args()
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    seconds = [one_kill() for _ in range(args.runs)]
    doc = {"load_before": load, "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
           "seconds": seconds, "median": statistics.median(seconds), "max": max(seconds),
           "within_1s": sum(s <= 1.0 for s in seconds)}
    write_results(args.out, doc)
    print(f"guest gone after kill -9: median {doc['median']:.2f} s, max {doc['max']:.2f} s, "
          f"{doc['within_1s']}/{len(seconds)} within 1 s (load {load}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
