"""The wire between two hosts: the routers a packet crosses, their firewalls, and NAT.

Hosts on a shared network talk directly. Otherwise a packet goes to the sender's gateway,
which forwards it (a host on two or more networks routes) towards the destination. A
firewall filters what it routes, statelessly, in the order the lab's tc filters apply: to
its own subnets and addresses unfiltered, then the allow rules, then the default. NAT is 1:1
on a firewall; what crosses it changes addresses, which AH's integrity check cannot survive.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.model.topology import FirewallRule, Host, IPv4Address, Topology
from lab.predict.decide import MULTICAST, LIMITED_BROADCAST, Packet

_PROTO = {"icmp": "1", "tcp": "6", "udp": "17", "esp": "50", "ah": "51"}


@dataclass(frozen=True)
class Hop:
    """A router on the way and the network the packet reaches it from."""

    router: Host
    ingress: str




def route(topology: Topology, sender: Host, dst: IPv4Address) -> list[Hop] | None:
    """The routers between sender and dst, or None when some host on the way has no route."""
    here, hops, seen = sender, [], set()
    while not any(dst in topology.network(i.network).subnet for i in here.interfaces):
        gw_name = here.gateway if here is sender or here.forwards else None
        if not gw_name or gw_name in seen:
            return None
        gw = topology.host(gw_name)
        shared = [i.network for i in here.interfaces if gw.address_on(i.network)]
        if not shared or not gw.forwards:
            return None
        seen.add(gw_name)
        hops.append(Hop(gw, shared[0]))
        here = gw
    return hops


def _rule_takes(topology: Topology, rule: FirewallRule, p: Packet, proto: str) -> bool:
    def hosts(name):
        return None if name == "any" else topology.host(name).addresses
    number = _PROTO.get(proto, proto)
    if rule.protocol is not None and _PROTO.get(rule.protocol, rule.protocol) != number:
        return False
    directions = [(rule.source, rule.destination, "dport")]
    if rule.both_directions:
        directions.append((rule.destination, rule.source, "sport"))
    for a, b, port_field in directions:
        src, dst = hosts(a), hosts(b)
        if (src is None or p.src in src) and (dst is None or p.dst in dst) and \
                (rule.port is None or getattr(p, port_field) == rule.port):
            return True
    return False


def firewall_verdict(topology: Topology, hop: Hop, p: Packet, proto: str) -> str | None:
    """None when the router's firewall lets the packet through, else why it does not."""
    fw = hop.router.firewall
    if fw is None:
        return None
    subnet = topology.network(hop.ingress).subnet
    if p.dst in subnet or p.dst in hop.router.addresses or p.dst in MULTICAST or p.dst == LIMITED_BROADCAST:
        return None  # not routed: the firewall's own traffic and its own subnet
    for rule in fw.allow:
        if _rule_takes(topology, rule, p, proto):
            return None
    if fw.default == "accept":
        return None
    return f"firewall {hop.router.name}: no allow rule for {describe(p, proto)}, default drop"


def describe(p: Packet, proto: str) -> str:
    if proto in ("esp", "ah"):
        return f"{proto.upper()} {p.src} -> {p.dst}"
    port = f":{p.dport}" if p.dport else ""
    sport = f":{p.sport}" if p.sport else ""
    return f"{proto} {p.src}{sport} -> {p.dst}{port}"


def blocked(topology: Topology, packets: list[tuple[Host, Packet, str]]) -> str | None:
    """Why some of these packets (each with its sender and wire protocol) cannot reach their
    destination; None when all of them can."""
    for sender, p, proto in packets:
        hops = route(topology, sender, p.dst)
        if hops is None:
            return f"no route from {sender.name} to {p.dst}"
        for hop in hops:
            if why := firewall_verdict(topology, hop, p, proto):
                return why
    return None


def crosses_nat(topology: Topology, a: Host, b: Host) -> bool:
    """Is one of the two translated on the way to the other (B8)?"""
    nat = topology.nat
    if nat is None:
        return False
    inside = {name for name, _ in nat.mapped}
    a_in, b_in = a.name in inside, b.name in inside
    return a_in != b_in and a.name != nat.on and b.name != nat.on


def both_ways(a: Host, b: Host, p: Packet, proto: str) -> list[tuple[Host, Packet, str]]:
    return [(a, p, proto), (b, p.reply(), proto)]


def ipsec_packets(a: Host, b: Host, pa: IPv4Address, pb: IPv4Address, protocol: str,
                  nat: bool) -> list[tuple[Host, Packet, str]]:
    """What a protected flow needs on the wire between its IPsec peers, both ways."""
    if nat:  # NAT traversal: ESP travels inside UDP 4500 (RFC 3948)
        return both_ways(a, b, Packet(pa, pb, "udp", 4500, 4500), "udp")
    return both_ways(a, b, Packet(pa, pb, protocol, None, None), protocol)


def ike_packets(a: Host, b: Host, pa: IPv4Address, pb: IPv4Address, nat: bool) -> list[tuple[Host, Packet, str]]:
    out = both_ways(a, b, Packet(pa, pb, "udp", 500, 500), "udp")
    if nat:  # NAT detected in IKE_SA_INIT: the rest moves to UDP 4500
        out += both_ways(a, b, Packet(pa, pb, "udp", 4500, 4500), "udp")
    return out
