#!/usr/bin/env python3
"""Write a design of N hosts: N/2 front-end/back-end pairs, each front-end requiring ESP to its
own back-end on HTTP (back-ends Respond Only), SMTP left clear. An odd N adds a firewall that
routes between the front-ends' network and the back-ends' (N=41: 20 pairs and a firewall).

usage: bench/scale_design.py N [--out FILE]     (default: bench/designs/scale-N.yaml)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def design(n: int) -> str:
    if n < 2:
        raise SystemExit("N must be at least 2")
    pairs, routed = n // 2, n % 2 == 1
    if pairs > 120:
        raise SystemExit("at most 120 pairs (one /24 per network)")
    lines = [f"name: scale-{n}",
             f"description: {n} hosts, {pairs} front-end/back-end pairs requiring ESP on HTTP"
             + (", routed by a firewall" if routed else ", one network") + " (bench/scale_design.py).",
             "ike: {version: 2}", "authentication: {method: psk}", "networks:"]
    if routed:
        lines += ["  dmz: 10.20.1.0/24", "  internal: 10.20.2.0/24"]
    else:
        lines += ["  lan: 10.20.1.0/24"]
    lines.append("hosts:")
    if routed:
        lines.append("  fw: {role: firewall, interfaces: {dmz: 10.20.1.1, internal: 10.20.2.1}}")
    for i in range(1, pairs + 1):
        fe_net, be_net = ("dmz", "internal") if routed else ("lan", "lan")
        fe_addr = f"10.20.1.{10 + i}"
        be_addr = f"10.20.2.{10 + i}" if routed else f"10.20.1.{130 + i}"
        gw = ", gateway: fw" if routed else ""
        lines.append(f"  fe{i}: {{role: front-end, interfaces: {{{fe_net}: {fe_addr}}}{gw}, policy: fe{i}-http}}")
        lines.append(f"  be{i}: {{role: back-end, interfaces: {{{be_net}: {be_addr}}}{gw}, "
                     "policy: client-respond-only, services: [http, smtp]}")
    lines.append("policies:")
    for i in range(1, pairs + 1):
        lines += [f"  fe{i}-http:", "    rules:",
                  f"      - {{name: fe{i}-be{i}-http, filter: {{from: me, to: be{i}, protocol: tcp, port: 80}}, "
                  "action: require, security: esp}"]
    lines.append("expect:")
    for i in range(1, pairs + 1):
        lines.append(f"  - {{from: fe{i}, to: be{i}, service: http, result: esp}}")
        lines.append(f"  - {{from: fe{i}, to: be{i}, service: smtp, result: clear}}")
    return "\n".join(lines) + "\n"


def write(n: int, out: str | None = None) -> str:
    path = Path(out or f"bench/designs/scale-{n}.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(design(n))
    return str(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int)
    ap.add_argument("--out")
    args = ap.parse_args()
    print(write(args.n, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
