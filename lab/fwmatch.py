"""How a firewall filter of the plan matches a packet, without the model: the guest uses it too
(lab.guest.finality), where importing the model would cost a second, and the verdicts,
which need not import the compiler for it."""

from __future__ import annotations

import ipaddress


def matches(match: dict, src: str, dst: str, proto: int, sport: int | None, dport: int | None) -> bool:
    """Does a filter's match (as in the plan) take this packet? Mirrors tc flower."""
    ip = ipaddress.ip_address
    if match.get("src") and ip(src) not in ipaddress.ip_network(match["src"]):
        return False
    if match.get("dst") and ip(dst) not in ipaddress.ip_network(match["dst"]):
        return False
    if match.get("proto") is not None and match["proto"] != proto:
        return False
    if match.get("sport") and match["sport"] != sport:
        return False
    if match.get("dport") and match["dport"] != dport:
        return False
    return True
