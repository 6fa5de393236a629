#!/usr/bin/env python3
"""How long each group of the conformance suite takes (a topology's lab run and its checks, or a
module with labs of its own), for scheduling: the longest groups start first (LPT), so the
suite does not end with one worker running a long group alone, and shards are dealt by time.

usage: python conformance/durations.py JUNIT_XML [OUT]    (default OUT: conformance/durations.json)

The figures come from a run's junit.xml (each case's time, setup included, summed by the
`@<group>` xdist adds to its name); a group the file does not know is taken as DEFAULT seconds.
Only the order matters: stale figures make the schedule worse, never a verdict wrong.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILE = HERE / "durations.json"
DEFAULT = 10.0  # an unknown group: a topology with a dropped flow or two, started early rather than last


def from_junit(path: str | Path) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for case in ET.parse(path).getroot().iter("testcase"):
        m = re.search(r"@([^@\]]+)$", case.get("name", ""))
        if m:
            totals[m.group(1)] += float(case.get("time") or 0)
    return {g: round(t, 1) for g, t in sorted(totals.items())}


def load(path: Path = FILE) -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}  # no figures: every group weighs the same, collection order decides


def longest_first(groups: list[str], seconds: dict[str, float]) -> list[str]:
    """Distinct groups, longest first; ties by name, so every process orders them alike."""
    return sorted(set(groups), key=lambda g: (-seconds.get(g, DEFAULT), g))


def deal(groups: list[str], n: int, seconds: dict[str, float]) -> list[set[str]]:
    """Groups into n shares of about equal time: each group, longest first, to the share with
    the least time so far (LPT). Deterministic, and every group in exactly one share."""
    shares: list[set[str]] = [set() for _ in range(n)]
    load_of = [0.0] * n
    for g in longest_first(groups, seconds):
        i = min(range(n), key=lambda k: (load_of[k], k))
        shares[i].add(g)
        load_of[i] += seconds.get(g, DEFAULT)
    return shares


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print(__doc__.strip().splitlines()[-4], file=sys.stderr)
        return 2
    out = Path(argv[1]) if len(argv) > 1 else FILE
    out.write_text(json.dumps(from_junit(argv[0]), indent=1) + "\n")
    print(f"{out}: {len(json.loads(out.read_text()))} groups")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
