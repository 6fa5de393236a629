"""Which Windows construct decides a packet on one host: an exemption, a rule, or nothing.

Read from the model, not from the compiled strongSwan connections, so that a prediction is an
independent check of the compiler. Windows has no rule order: ipsec.sys sorts filters by weight
(most specific first, ties to block, then permit, then negotiate) and the first filter that
matches decides. Filters are mirrored: a rule from `me` to a peer also catches what the peer
sends back. Tunnel rules (B10) may leave `me` out: the side behind the tunnel's far end is theirs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lab.model.topology import Action, Endpoint, Host, IPv4Address, Rule, Topology

_PROTOCOL_NAMES = {"1": "icmp", "6": "tcp", "17": "udp"}
MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")
LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


@dataclass(frozen=True)
class Packet:
    """One direction of a flow: addresses, protocol (tcp, udp, icmp) and ports (None: ephemeral
    or none; a filter with a port never matches an ephemeral one)."""

    src: IPv4Address
    dst: IPv4Address
    protocol: str
    sport: int | None
    dport: int | None

    def reply(self) -> Packet:
        return Packet(self.dst, self.src, self.protocol, self.dport, self.sport)


@dataclass(frozen=True)
class Sides:
    """A rule seen from the host applying it: its own side, the peer's side, their ports."""

    mine: tuple[ipaddress.IPv4Network, ...]
    my_port: int | None
    theirs: tuple[ipaddress.IPv4Network, ...]
    their_port: int | None
    peer: Endpoint


@dataclass(frozen=True)
class Decision:
    """What decides a packet on a host. kind: exempt | permit | block | negotiate | none."""

    kind: str
    text: str  # "rule fe-be-http (require esp)", "exemption: Kerberos (NoDefaultExempt 0)", ...
    rule: Rule | None = None

    @property
    def rule_name(self) -> str | None:
        return self.rule.name if self.rule else None


def sides(topology: Topology, host: Host, rule: Rule) -> Sides:
    """Mine and theirs, as strongSwan's local and remote selectors would be."""
    f = rule.filter
    ends = [(f.source, f.source_port), (f.destination, f.destination_port)]
    if rule.tunnel_endpoint and "me" not in (f.source.kind, f.destination.kind):
        peer = topology.host(rule.tunnel_endpoint)

        def behind_peer(ep: Endpoint) -> bool:
            return ep.text == peer.name or any(a in n for a in peer.addresses for n in ep.networks)
        mine_first = behind_peer(f.destination)
    else:
        mine_first = f.source.kind == "me"
    (mine, my_port), (theirs, their_port) = ends if mine_first else ends[::-1]
    return Sides(mine.prefixes_for(host), my_port, theirs.prefixes_for(host), their_port, theirs)


def protocol_matches(wanted: str | None, protocol: str) -> bool:
    return wanted is None or _PROTOCOL_NAMES.get(wanted, wanted) == protocol


def matches(topology: Topology, host: Host, rule: Rule, packet: Packet, outbound: bool) -> bool:
    """Does the rule's mirrored filter take this packet, sent (outbound) or received by host?"""
    s = sides(topology, host, rule)
    local, remote = (packet.src, packet.dst) if outbound else (packet.dst, packet.src)
    lport, rport = (packet.sport, packet.dport) if outbound else (packet.dport, packet.sport)
    return (protocol_matches(rule.filter.protocol, packet.protocol)
            and any(local in n for n in s.mine) and any(remote in n for n in s.theirs)
            and s.my_port in (None, lport) and s.their_port in (None, rport)
            and (s.my_port is None and s.their_port is None or packet.protocol in ("tcp", "udp")))


def weight(topology: Topology, host: Host, rule: Rule, index: int) -> tuple:
    """Sort key, lowest first: more specific filters first, ties to block, permit, negotiate,
    then the earlier rule (Windows' filter weight; the compiler's kernel priorities agree)."""
    f = rule.filter
    width = sum(min((p.prefixlen for p in ep.prefixes_for(host)), default=0)
                for ep in (f.source, f.destination))
    specific = width * 8 + (4 if f.source_port or f.destination_port else 0) + (2 if f.protocol else 0)
    tie = {Action.BLOCK: 0, Action.PERMIT: 1}.get(rule.action, 2)
    return (-specific, tie, index)


def describe(rule: Rule) -> str:
    what = rule.action.value
    if rule.negotiates:
        protos = [m.protocol.value for m in rule.security] or ["esp"]
        what += " " + "/".join(dict.fromkeys(protos))
        if rule.tunnel_endpoint:
            what += f", tunnel to {rule.tunnel_endpoint}"
    return f"rule {rule.name} ({what})"


def exemption(topology: Topology, host: Host, packet: Packet) -> str | None:
    """The default exemption (NoDefaultExempt) that lets this packet bypass every filter."""
    level = host.exemptions
    if level in (0, 2):
        if packet.protocol in ("tcp", "udp") and 88 in (packet.sport, packet.dport):
            return f"exemption: Kerberos (NoDefaultExempt {level})"
        if packet.protocol == "46":
            return f"exemption: RSVP (NoDefaultExempt {level})"
    if level in (0, 1) and is_broadcast_or_multicast(topology, packet.dst):
        return f"exemption: broadcast and multicast (NoDefaultExempt {level})"
    return None


def is_broadcast_or_multicast(topology: Topology, address: IPv4Address) -> bool:
    return (address in MULTICAST or address == LIMITED_BROADCAST
            or any(address == n.subnet.broadcast_address for n in topology.networks))


def decide(topology: Topology, host: Host, packet: Packet, outbound: bool,
           tunnels: bool = True) -> Decision:
    """The exemption or rule of host's policy that decides packet, as ipsec.sys would.
    `tunnels=False` leaves tunnel rules out (a host's own transport traffic to its gateway)."""
    if not host.policy:
        return Decision("none", "no IPsec policy")
    if why := exemption(topology, host, packet):
        return Decision("exempt", why)
    policy = topology.policy(host.policy)
    candidates = [(weight(topology, host, r, i), r) for i, r in enumerate(policy.rules)
                  if (tunnels or not r.tunnel_endpoint) and matches(topology, host, r, packet, outbound)]
    if not candidates:
        if policy.respond:
            return Decision("none", "no rule matches; default response rule (Respond Only)")
        return Decision("none", "no rule matches")
    rule = min(candidates, key=lambda c: c[0])[1]
    kind = "negotiate" if rule.negotiates else rule.action.value
    return Decision(kind, describe(rule), rule)
