"""Which rule of a host's policy catches a flow: questions the loader asks of a design.

Windows has no rule order: ipsec.sys sorts filters by weight, most specific first, and the
first that matches a packet decides. Filters are mirrored, so a rule written from the peer to
`me` catches the traffic this host sends to the peer as well.
"""

from __future__ import annotations

from lab.model.services import PROTOCOL_NUMBERS
from lab.model.topology import Filter, Host, Policy, Rule

KERBEROS = (("udp", 88), ("tcp", 88))
_PROTOCOL_NAMES = {str(number): name for name, number in PROTOCOL_NUMBERS.items()}  # "6" -> "tcp"


def kerberos_inside_ipsec(host: Host, policy: Policy | None,
                          hosts: dict[str, Host]) -> tuple[Host, Policy, Rule] | None:
    """The first domain controller to which `host` would send Kerberos inside IPsec.

    (domain controller, policy, negotiate rule), or None: no policy, no rule negotiates
    Kerberos to a domain controller, or the host's exemptions let Kerberos by (NoDefaultExempt
    0 or 2).
    """
    if policy is None or host.exemptions in (0, 2):
        return None
    for dc in hosts.values():
        if dc.role != "domain-controller" or dc.name == host.name:
            continue
        for protocol, port in KERBEROS:
            rule = winning_rule(policy, host, dc, protocol, port)
            if rule is not None and rule.negotiates:
                return dc, policy, rule
    return None


def winning_rule(policy: Policy, host: Host, peer: Host, protocol: str, port: int) -> Rule | None:
    """The rule of `policy` that decides `protocol` traffic from `host` to `peer`'s `port`
    (the client's own port being any), or None when no filter matches it."""
    matching = [r for r in policy.rules if _matches(r.filter, peer, protocol, port)]
    return max(matching, key=_weight, default=None)  # on a tie, the first written


def _matches(f: Filter, peer: Host, protocol: str, port: int) -> bool:
    if f.source.kind == "me" and f.destination.kind != "me":
        theirs, their_port, my_port = f.destination, f.destination_port, f.source_port
    elif f.destination.kind == "me" and f.source.kind != "me":
        theirs, their_port, my_port = f.source, f.source_port, f.destination_port
    else:
        return False
    if f.protocol is not None and _PROTOCOL_NAMES.get(f.protocol, f.protocol) != protocol:
        return False
    if their_port not in (None, port) or my_port is not None:
        return False
    return any(address in net for address in peer.addresses for net in theirs.networks)


def _weight(rule: Rule) -> tuple[int, bool, int]:
    """Windows' filter weight, simplified: the peer's prefix, then protocol, then ports."""
    f = rule.filter
    peer = f.destination if f.source.kind == "me" else f.source
    prefix = max((net.prefixlen for net in peer.networks), default=0)
    ports = (f.source_port is not None) + (f.destination_port is not None)
    return prefix, f.protocol is not None, ports
