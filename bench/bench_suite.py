#!/usr/bin/env python3
"""Time the whole conformance suite as `tox -e lab` runs it (pytest-xdist, one lab per worker),
for each worker count asked for; cases passed and failed from its junit.xml.

usage: bench/bench_suite.py [--workers 1,2,3] [--out FILE] [-- extra pytest arguments]

Each run takes minutes (the whole suite); run it on a machine nobody else is loading.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from results_file import write_results

ROOT = Path(__file__).resolve().parent.parent
JUNIT = ROOT / "reports" / "conformance" / "junit.xml"


def counts() -> dict[str, int]:
    root = ET.parse(JUNIT).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    return {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="auto")
    ap.add_argument("--out", default="bench/results/suite.json")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args()
    rows = []
    for w in args.workers.split(","):
        argv = [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", "-n", w,
                "--dist", "loadgroup", f"--junitxml={JUNIT}", *args.pytest_args]
        t0 = time.monotonic()
        rc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL).returncode
        row = {"workers": w, "seconds": round(time.monotonic() - t0, 1), "exit": rc, **counts()}
        rows.append(row)
        print(row, file=sys.stderr)
    write_results(args.out, {"rows": rows})
    print("| workers | wall | cases | failed | errors |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['seconds']:.0f} s | {r['tests']} | {r['failures']} | {r['errors']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
