"""Judging real-client probes (curl, IMAP/POP3 logins, kinit, ldapsearch) and proxied legs.

- A real client cannot be told its source port beforehand; curl and the Python mail clients
  report it, kinit and ldapsearch do not. Then the port is read from the wire: the first
  unprotected (or AH) packet between the two addresses, with the service's protocol and port,
  while the probe ran. Only ESP between them: the port stays unknown (0), which still matches
  an SA whose selectors leave the client's port open.
- `refused`: the real server answered and refused (HTTP 403 "SSL required").
- `tls`: delivered without IPsec, but inside TLS: clear at the IP layer, and neither the marker
  nor the login readable anywhere on the wire.
"""

from __future__ import annotations

import re

from lab.model.services import PROTOCOL_NUMBERS
from lab.model.topology import Result
from lab.verdicts.model import Observed

SLACK = 0.5


def client_port(probe: dict, packets) -> int:
    if probe.get("sport"):
        return probe["sport"]
    proto = PROTOCOL_NUMBERS.get(probe["protocol"])
    start, end = probe["t_start"] - SLACK, (probe["t_end"] or probe["t_start"]) + SLACK
    for p in sorted(packets, key=lambda p: p.time):
        if p.kind in ("clear", "ah") and p.protocol == proto and start <= p.time <= end \
                and p.src == probe["src_address"] and p.dst == probe["dst_address"] and p.dport == probe["port"]:
            return p.sport
    return 0


def observed(observed: Observed, probe: dict, outcome: dict, evidence) -> Observed:
    """A Result (or Inconclusive) as the wire showed it, read again for a real client."""
    if not (probe.get("client") or probe.get("proxied")):
        return observed
    if outcome.get("refused"):
        return Result.REFUSED
    if observed is Result.CLEAR and probe.get("service") == "https" and not evidence.credential_in_clear \
            and not evidence.marker_in_clear:
        return Result.TLS
    return observed


def reason(text: str, probe: dict, outcome: dict, observed: Observed | None = None) -> str:
    if not (probe.get("client") or probe.get("proxied")):
        return text
    if observed in (Result.TLS, Result.REFUSED):  # no IPsec here: the handshake was not "before IPsec"
        text = re.sub(r"(\d+) payload-less packets in clear before IPsec took over",
                      r"\1 packets in clear", text)
        text = text.replace("delivered in", "answered in") if observed is Result.REFUSED else text
    text = text.replace("fake credential readable", "login readable")
    who = outcome.get("client") or "client"
    answer = outcome.get("answer")
    return f"{text}; real {who}: {answer}" if answer else f"{text}; real {who}"
