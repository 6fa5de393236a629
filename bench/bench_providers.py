#!/usr/bin/env python3
"""Bring-up of the Docker provider next to the namespace provider, measured in one session.

Runs the topology with each provider, alternating (netns, docker, netns, docker, ...), so both
see the same machine load, and writes medians per phase plus the Docker provider's own split
(dockerd ready, image import, container starts, testinfra checks, container/dockerd removal)
to bench/results/providers.json. The image must be built already (`make images`): its build
time is recorded in the image's metadata, not here.

usage: bench/bench_providers.py [TOPOLOGY] [--runs N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from lab import images, runner

PHASES = ["guest_boot", "bring_up", "probes", "collect", "teardown", "total"]
DOCKER = ["dockerd_ready_s", "image_imported_s", "image_present_s", "containers_s", "host_checks_s", "teardown_s"]


def one_run(topology: str, provider: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="lab-bench-") as report_dir:
        t0 = time.monotonic()
        report = runner.run(topology, report_dir, provider=provider)
        wall = time.monotonic() - t0
        raw = json.loads(Path(report_dir, "executor.json").read_text())
    if not report.ok:
        raise SystemExit(f"{provider} run failed: {[v.id for v in report.failed]} {report.errors}")
    t = {k: report.timings.get(k) for k in PHASES}
    t["total"] = round(wall, 3)
    if provider == "docker":
        t["docker"] = {k: v for k, v in raw.get("docker", {}).items() if k in DOCKER}
    return t


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("topology", nargs="?", default="topologies/exchange-fe-be-http.yaml")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default="bench/results/providers.json")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"netns": [], "docker": []}
    for i in range(args.runs):
        for provider in runs:
            runs[provider].append(one_run(args.topology, provider))
            print(f"run {i + 1}/{args.runs} {provider}: bring-up {runs[provider][-1]['bring_up']} s, "
                  f"total {runs[provider][-1]['total']} s", flush=True)
    summary = {p: {k: median([r[k] for r in rs]) for k in PHASES} for p, rs in runs.items()}
    summary["docker"]["docker"] = {k: median([r["docker"].get(k) for r in runs["docker"]]) for k in DOCKER}
    img = images.find()
    doc = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.node(),
        "topology": args.topology, "runs": args.runs, "medians": summary, "all": runs,
        "image": {k: img.meta.get(k) for k in ("tag", "size", "build_seconds")} if img else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
