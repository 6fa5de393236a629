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
import subprocess
import sys
import tempfile
import time

from results_file import write_results

from lab import cleanup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(ROOT, "topologies", "exchange-fe-be-http.yaml")


def one_kill() -> float:
    with tempfile.TemporaryDirectory(prefix="lab-bench-kill-") as report:
        proc = subprocess.Popen([sys.executable, "-m", "lab", "verify", DEFAULT, "--report", report],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        run_ids = set()
        for line in proc.stdout:
            if " start " in line and "run " in line:
                run_ids.add(line.split("run ")[1].split()[0])
            if "bring-up" in line:
                break
        proc.kill()
        killed = time.monotonic()
        proc.wait()
        while cleanup.processes_of(run_ids) and time.monotonic() - killed < 10:
            time.sleep(0.01)
        gone = time.monotonic() - killed
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
