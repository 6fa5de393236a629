"""Alter one byte of each protected packet in flight, on the router between two hosts.

Runs inside the lab kernel. tc's pedit action on the router's egress interface rewrites a byte
of every ESP (IP 50) and AH (IP 51) packet between the two addresses: inside ESP's encrypted
payload, inside AH's protected TCP header. The receiver must drop each one, and its XFRM
integrity counter must say why.

The probe stops waiting once that is final: the receiver's integrity counters rose (a packet
of this pair, the only one altered while it runs, was refused) and the sender's kernel sends
the flow only protected (its XFRM policy requires a template), so every packet of it is
altered and none can arrive; 1 s later, as for every other probe (lab.guest.finality).
Where either is missing (the carrier is ESP in UDP, which pedit does not touch; a policy lets
the flow out in clear) the probe waits out its timeout as before.
"""

from __future__ import annotations

import subprocess
import threading
import time

from lab.guest import xfrm, xfrmpolicy
from lab.guest.finality import GRACE, POLL, PROTO
from lab.guest.netns import ip, run_in
from lab.guest.traffic import Deadline, run_probe

OFFSETS = {50: 40, 51: 56}  # bytes from the IP header: ESP ciphertext / the TCP header under AH


def _tc(ns: str, *commands: str) -> None:
    """tc commands in one process (`tc -batch`): a process start costs the guest 0.2 s."""
    res = subprocess.run(run_in(ns, "tc", "-batch", "-"), input="".join(c + "\n" for c in commands),
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"tc {'; '.join(commands)} in {ns}: {res.stderr.strip()}")


def integrity_rose(before: dict[str, int], now: dict[str, int]) -> dict[str, int]:
    """The receiver's integrity counters that rose (the names the verdict counts as its
    integrity check refusing: lab.verdicts.classify)."""
    return {k: v - before.get(k, 0) for k, v in now.items()
            if ("Proto" in k or "Error" in k) and v > before.get(k, 0)}


def tampered_final(rose: dict[str, int], sender_holds: bool, receiver: str, sender: str) -> str | None:
    """Why the tampered flow can no longer arrive, or None while it still might."""
    if not rose or not sender_holds:
        return None
    counts = ", ".join(f"{k} +{v}" for k, v in sorted(rose.items()))
    return f"{receiver}'s kernel refused the altered packets ({counts}); {sender}'s kernel sends it only protected"


def _sender_holds(probe: dict, src_ns: str) -> bool:
    res = subprocess.run(ip(src_ns, "xfrm", "policy", "list"), capture_output=True, text=True)
    if res.returncode != 0:
        return False
    decision = xfrmpolicy.decide(xfrmpolicy.parse(res.stdout), "out", probe["src_address"], probe["dst_address"],
                                 PROTO.get(probe["protocol"], -1), None, probe["port"])
    return decision == xfrmpolicy.HELD


def _watch(probe: dict, src_ns: str, before: dict, deadline: Deadline, done: threading.Event) -> None:
    t = probe["tamper"]
    holds = _sender_holds(probe, src_ns)
    final_at = None
    while not done.wait(POLL):
        why = tampered_final(integrity_rose(before, xfrm.stats(t["receiver_ns"])), holds,
                             t.get("receiver", probe["dst"]), probe["src"])
        final_at = (final_at or time.monotonic()) if why else None
        if why and time.monotonic() - final_at >= GRACE:
            deadline.give_up(why)
            return


def run_tampered(probe: dict, src_ns: str) -> dict:
    t = probe["tamper"]
    ns, dev = t["router_ns"], t["dev"]
    _tc(ns, f"qdisc replace dev {dev} clsact", *(
        f"filter add dev {dev} egress protocol ip prio {proto} u32"
        f" match ip src {probe['src_address']}/32 match ip dst {probe['dst_address']}/32 match ip protocol {proto} 0xff"
        f" action pedit munge offset {offset} u8 set 0x5a" for proto, offset in OFFSETS.items()))
    before = xfrm.stats(t["receiver_ns"])
    deadline, done = Deadline(probe["timeout"]), threading.Event()
    watcher = threading.Thread(target=_watch, args=(probe, src_ns, before, deadline, done), daemon=True)
    watcher.start()
    try:
        result = run_probe(probe, src_ns, deadline)
    finally:
        done.set()
        _tc(ns, f"qdisc del dev {dev} clsact")
    watcher.join(timeout=2)
    after = xfrm.stats(t["receiver_ns"])
    result["xfrm_errors"] = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    return result
