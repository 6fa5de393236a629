#!/usr/bin/env python3
"""Every figure of the README's speed table, in one command (`make bench-all`), about 10
minutes on a quiet machine: the default design and a design whose only problem is a dropped
flow (`lab verify`, N runs each, medians and ranges), cost by number of hosts (2 to 80, one run
each: every verdict right?), and the whole conformance suite as `tox -e lab` runs it (xdist,
one lab per worker; `--no-suite` leaves it out). Writes bench/results/all.json and prints the
table in Markdown, ready to paste under the README's "before" figures (the issue's).

usage: bench/bench_all.py [--runs N] [--sizes 2,4,10,20,41,80] [--no-suite]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_compare import one, summary
from results_file import write_results
from scale_design import write

ROOT = Path(__file__).resolve().parent.parent
DESIGNS = {"default design (exchange-fe-be-http)": "topologies/exchange-fe-be-http.yaml",
           "a dropped flow (firewall-missing-esp)": "topologies/firewall-missing-esp.yaml",
           "IKE dropped at a firewall (firewall-missing-ike)": "topologies/firewall-missing-ike.yaml"}


def cell(s: dict | None, key: str = "total") -> str:
    v = (s or {}).get(key)
    return f"{v['median']:.1f} s ({v['min']:.1f}-{v['max']:.1f})" if v else "-"


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="2,4,10,20,41,80")
    ap.add_argument("--no-suite", action="store_true")
    ap.add_argument("--out", default="bench/results/all.json")
    args = ap.parse_args()
    python, doc = sys.executable, {"load_before": load()}
    doc["designs"] = {}
    for label, path in DESIGNS.items():
        doc["designs"][label] = summary([one(python, str(ROOT / path)) for _ in range(args.runs)])
        print(f"{label}: {cell(doc['designs'][label])}", file=sys.stderr)
    doc["scale"] = []
    for n in (int(x) for x in args.sizes.split(",")):
        s = summary([one(python, write(n, str(ROOT / "bench" / "designs" / f"scale-{n}.yaml")))])
        doc["scale"].append({"hosts": n, "pairs": n // 2, **s})
        print(f"{n} hosts: {cell(s)}", file=sys.stderr)
    if not args.no_suite:
        workers = os.environ.get("LAB_WORKERS", "auto")
        t0 = time.monotonic()
        rc = subprocess.run([python, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", "-n", workers,
                             "--dist", "loadgroup"], cwd=ROOT, stdout=subprocess.DEVNULL).returncode
        doc["suite"] = {"workers": workers, "seconds": round(time.monotonic() - t0, 1), "exit": rc}
    doc["load_after"] = load()
    write_results(str(ROOT / args.out), doc)
    print(f"load average before {doc['load_before']}, after {doc['load_after']}; medians (ranges), {args.runs} runs\n")
    print("`lab verify` is the command's wall time (process start to exit); run is lab.runner.run's own total.\n")
    print("| what | `lab verify` | run | guest boot | bring-up | probes | every verdict right |")
    print("|---|---|---|---|---|---|---|")
    for label, s in doc["designs"].items():
        print(f"| {label} | {cell(s, 'command')} | {cell(s)} | {cell(s, 'guest_boot')} | {cell(s, 'bring_up')} | "
              f"{cell(s, 'probes')} | {s['all_verdicts_right']} of {s['runs']} |")
    if "suite" in doc:
        print(f"| conformance suite (`-n {doc['suite']['workers']}`) | {doc['suite']['seconds']:.0f} s | | | | | "
              f"{'yes' if doc['suite']['exit'] == 0 else 'no (exit %d)' % doc['suite']['exit']} |")
    print("\n| hosts | ESP pairs | total | guest boot | bring-up | probes | collect | teardown | IKE median, max | right |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in doc["scale"]:
        def one_cell(k):
            return f"{r[k]['median']:.1f}" if k in r else "-"
        ike = r.get("ike_seconds")
        ike_text = f"{ike['median']:.2f}, {ike['max']:.2f}" if ike else "-"
        print(f"| {r['hosts']} | {r['pairs']} | {one_cell('total')} | {one_cell('guest_boot')} | {one_cell('bring_up')} | "
              f"{one_cell('probes')} | {one_cell('collect')} | {one_cell('teardown')} | "
              f"{ike_text} | "
              f"{'yes' if r.get('all_verdicts_right') else 'no'} |")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
