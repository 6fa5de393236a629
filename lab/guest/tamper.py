"""Alter one byte of each protected packet in flight, on the router between two hosts.

Runs inside the lab kernel. tc's pedit action on the router's egress interface rewrites a byte
of every ESP (IP 50) and AH (IP 51) packet between the two addresses: inside ESP's encrypted
payload, inside AH's protected TCP header. The receiver must drop each one, and its XFRM
integrity counter must say why.
"""

from __future__ import annotations

import subprocess

from lab.guest import xfrm
from lab.guest.netns import run_in
from lab.guest.traffic import run_probe

OFFSETS = {50: 40, 51: 56}  # bytes from the IP header: ESP ciphertext / the TCP header under AH


def _tc(ns: str, *args: str) -> None:
    res = subprocess.run(run_in(ns, "tc", *args), capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"tc {' '.join(args)} in {ns}: {res.stderr.strip()}")


def run_tampered(probe: dict, src_ns: str) -> dict:
    t = probe["tamper"]
    ns, dev = t["router_ns"], t["dev"]
    _tc(ns, "qdisc", "replace", "dev", dev, "clsact")
    for proto, offset in OFFSETS.items():
        _tc(ns, "filter", "add", "dev", dev, "egress", "protocol", "ip", "prio", str(proto), "u32",
            "match", "ip", "src", f"{probe['src_address']}/32", "match", "ip", "dst", f"{probe['dst_address']}/32",
            "match", "ip", "protocol", str(proto), "0xff",
            "action", "pedit", "munge", "offset", str(offset), "u8", "set", "0x5a")
    before = xfrm.stats(t["receiver_ns"])
    try:
        result = run_probe(probe, src_ns)
    finally:
        _tc(ns, "qdisc", "del", "dev", dev, "clsact")
    after = xfrm.stats(t["receiver_ns"])
    result["xfrm_errors"] = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    return result
