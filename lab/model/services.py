"""The service catalogue: each name is one protocol and port (icmp: an echo request and reply)."""

from __future__ import annotations

import re

from lab.model.topology import Service

# IP protocol numbers of the protocols the lab names: the one table (filters, captures, selectors).
PROTOCOL_NUMBERS: dict[str, int] = {"icmp": 1, "tcp": 6, "udp": 17, "esp": 50, "ah": 51}

CATALOGUE: dict[str, tuple[str, int]] = {
    "http": ("tcp", 80),
    "https": ("tcp", 443),
    "smtp": ("tcp", 25),
    "pop3": ("tcp", 110),
    "imap": ("tcp", 143),
    "ldap": ("tcp", 389),
    "gc": ("tcp", 3268),
    "rpc": ("tcp", 135),
    "kerberos": ("udp", 88),
    "kerberos-tcp": ("tcp", 88),
    "dns": ("udp", 53),
    "icmp": ("icmp", 0),  # a ping: echo request, echo reply; ICMP has no ports
}

_LITERAL = re.compile(r"^(tcp|udp)/(\d{1,5})$")


def parse_service(text: str) -> Service:
    """`http`, `icmp` or a literal `tcp/8080`. Raises ValueError with a message fit for users."""
    if text in CATALOGUE:
        protocol, port = CATALOGUE[text]
        return Service(text, protocol, port)
    m = _LITERAL.match(text)
    if m and 1 <= int(m.group(2)) <= 65535:
        return Service(text, m.group(1), int(m.group(2)))
    known = ", ".join(sorted(CATALOGUE))
    raise ValueError(f"unknown service {text!r}; use one of {known} or a literal like tcp/8080")
