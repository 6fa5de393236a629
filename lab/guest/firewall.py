"""Apply a firewall host's tc filters (packet filter and NAT) and read their counters.

Runs inside the lab kernel: one `tc -batch` process to apply, one to read. The filters come
ready-made from lab.compile.firewall; this module knows nothing of the model.
"""

from __future__ import annotations

import json
import subprocess

from lab.guest.netns import run_in


def _tc_batch(ns: str, lines: list[str], *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(run_in(ns, "tc", *options, "-batch", "-"),
                          input="\n".join(lines) + "\n", capture_output=True, text=True)


def apply(ns: str, fw: dict) -> None:
    res = _tc_batch(ns, fw["commands"])
    if res.returncode != 0:
        raise RuntimeError(f"tc filters on {fw['host']} failed: {res.stderr.strip()}")


def counters(ns: str, fw: dict) -> list[dict]:
    """Packets and bytes each filter's action counted: [{dev, hook, pref, packets, bytes}]."""
    shows = [(d, hook) for d in fw["devices"] for hook in ("ingress", "egress")]
    res = _tc_batch(ns, [f"filter show dev {d} {hook}" for d, hook in shows], "-s", "-j")
    if res.returncode != 0:
        raise RuntimeError(f"tc counters on {fw['host']}: {res.stderr.strip()}")
    out, text, pos, decoder = [], res.stdout, 0, json.JSONDecoder()
    for dev, hook in shows:  # one JSON array per command, in order
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        items, pos = decoder.raw_decode(text, pos)
        for item in items:
            actions = (item.get("options") or {}).get("actions") or []
            if not actions:
                continue  # the chain header line of each pref
            stats = actions[0].get("stats", {})
            out.append({"dev": dev, "hook": hook, "pref": item.get("pref"),
                        "packets": int(stats.get("packets", 0)), "bytes": int(stats.get("bytes", 0))})
    return out
