"""Compile a firewall host's `firewall:` section and the topology's `nat:` into tc commands.

Pure functions, no I/O. Debian's User-Mode Linux kernel has no IPv4 nftables family (and no
legacy iptables), so the lab's packet filter is tc's classifier: flower filters on the ingress
(clsact) of each of the firewall's interfaces (u32 for the allow rules), in this order:

  pref 10..    NAT (act_nat, stateless 1:1): on the outside interface, ingress rewrites a mapped
               address back to the inside host's, egress rewrites the inside host's source to
               its mapped address; `continue`, so the filters below see the real addresses.
  pref 100..   not routed, not filtered: packets to the firewall's own subnets on that interface
               (its own address, broadcasts, frames the bridge floods), to its other addresses,
               multicast and limited broadcast. The firewall's own IKE and ESP as a tunnel
               endpoint arrive here.
  pref 1000..  one u32 filter per allow rule, direction and address pair: action pass.
  pref 60000   the default: matchall, action drop (or pass, for `default: accept`).

Every filter's action keeps packet and byte counters; `filters` in the plan says which rule each
(device, pref) belongs to, and how it matches, so the host can say which filter a dropped packet
met. ARP is untouched (the filters are `protocol ip`).
"""

from __future__ import annotations

import ipaddress

from lab.model.services import PROTOCOL_NUMBERS
from lab.model.topology import FirewallRule, Host, Topology

NAT_PREF = 10
LOCAL_PREF = 100
RULE_PREF = 1000
DEFAULT_PREF = 60000


def _proto_number(protocol: str | None) -> int | None:
    if protocol is None:
        return None
    return PROTOCOL_NUMBERS.get(protocol, int(protocol) if protocol.isdigit() else None)


def _flower(match: dict) -> str:
    """flower keys for a match dict (src, dst: CIDR; proto: number; sport, dport)."""
    keys = []
    if match.get("src"):
        keys.append(f"src_ip {match['src']}")
    if match.get("dst"):
        keys.append(f"dst_ip {match['dst']}")
    proto = match.get("proto")
    if proto is not None:
        keys.append("ip_proto " + {6: "tcp", 17: "udp", 1: "icmp"}.get(proto, str(proto)))
    if match.get("sport"):
        keys.append(f"src_port {match['sport']}")
    if match.get("dport"):
        keys.append(f"dst_port {match['dport']}")
    return "flower " + " ".join(keys) if keys else "matchall"


def _u32(match: dict) -> str:
    """u32 keys for a match dict. The allow rules use u32, not flower: measured in the guest,
    flower's `ip_proto 50` never matched an ESP packet while u32's `ip protocol 50` did. The
    ports are read at offset 20 of the IP header (the lab's packets carry no IP options)."""
    keys = []
    if match.get("src"):
        keys.append(f"match ip src {match['src']}")
    if match.get("dst"):
        keys.append(f"match ip dst {match['dst']}")
    if match.get("proto") is not None:
        keys.append(f"match ip protocol {match['proto']} 0xff")
    if match.get("sport"):
        keys.append(f"match ip sport {match['sport']} 0xffff")
    if match.get("dport"):
        keys.append(f"match ip dport {match['dport']} 0xffff")
    return "u32 " + " ".join(keys) if keys else "matchall"


def _addresses(topology: Topology, name: str) -> list[str | None]:
    if name == "any":
        return [None]
    return [f"{a}/32" for a in topology.host(name).addresses]


def rule_matches(topology: Topology, rule: FirewallRule) -> list[dict]:
    """The (one-way) matches of an allow rule: forward, then the reply direction."""
    proto = _proto_number(rule.protocol)
    out = []
    for src in _addresses(topology, rule.source):
        for dst in _addresses(topology, rule.destination):
            out.append({"src": src, "dst": dst, "proto": proto, "sport": None, "dport": rule.port})
            if rule.both_directions:
                out.append({"src": dst, "dst": src, "proto": proto, "sport": rule.port, "dport": None})
    return out


def nat_filters(topology: Topology, host: Host) -> list[dict]:
    nat = topology.nat
    if nat is None or nat.on != host.name:
        return []
    dev = host.ifname(nat.outside)
    out = []
    for i, (name, mapped) in enumerate(nat.mapped):
        inside = topology.host(name).address_on(nat.inside)
        out.append({"dev": dev, "hook": "ingress", "pref": NAT_PREF + i, "label": f"nat {mapped} -> {name}",
                    "kind": "nat", "match": {"dst": f"{mapped}/32"},
                    "action": f"nat ingress {mapped}/32 {inside} continue"})
        out.append({"dev": dev, "hook": "egress", "pref": NAT_PREF + i, "label": f"nat {name} -> {mapped}",
                    "kind": "nat", "match": {"src": f"{inside}/32"},
                    "action": f"nat egress {inside}/32 {mapped} continue"})
    return out


def filter_rules(topology: Topology, host: Host) -> list[dict]:
    fw = host.firewall
    if fw is None:
        return []
    out = []
    for iface in host.interfaces:
        dev = host.ifname(iface.network)
        local = [str(topology.network(iface.network).subnet)]
        local += [f"{i.address}/32" for i in host.interfaces if i.network != iface.network]
        local += ["224.0.0.0/4", "255.255.255.255/32"]
        for k, dst in enumerate(local):
            out.append({"dev": dev, "hook": "ingress", "pref": LOCAL_PREF + k, "kind": "local",
                        "label": f"not routed (to {dst})", "match": {"dst": dst}, "action": "pass"})
        pref = RULE_PREF
        for index, rule in enumerate(fw.allow):
            for m in rule_matches(topology, rule):
                out.append({"dev": dev, "hook": "ingress", "pref": pref, "kind": "allow", "rule": index,
                            "label": rule.label, "match": m, "action": "pass"})
                pref += 1
        out.append({"dev": dev, "hook": "ingress", "pref": DEFAULT_PREF, "kind": "default",
                    "label": f"default {fw.default}", "match": {},
                    "action": "drop" if fw.default == "drop" else "pass"})
    return out


def firewall_plan(topology: Topology, host: Host) -> dict | None:
    """What the executor applies on this host: tc batch lines, the filters they make, the
    extra (NAT) addresses; None when the host neither filters nor translates."""
    filters = nat_filters(topology, host) + filter_rules(topology, host)
    if not filters:
        return None
    devs = sorted({f["dev"] for f in filters})
    commands = [f"qdisc add dev {d} clsact" for d in devs]
    for f in filters:
        classifier = _u32(f["match"]) if f["kind"] == "allow" else _flower(f["match"])
        commands.append(f"filter add dev {f['dev']} {f['hook']} protocol ip pref {f['pref']} "
                        f"{classifier} action {f['action']}")
    addresses = []
    if topology.nat and topology.nat.on == host.name:
        prefix = topology.network(topology.nat.outside).subnet.prefixlen
        addresses = [{"address": f"{a}/32", "ifname": host.ifname(topology.nat.outside),
                      "host": name, "network_prefix": prefix} for name, a in topology.nat.mapped]
    return {"host": host.name, "devices": devs, "commands": commands, "filters": filters,
            "addresses": addresses, "default": host.firewall.default if host.firewall else None}


def nat_aliases(topology: Topology) -> dict[str, str]:
    """Inside address -> the address it has on the outside network."""
    nat = topology.nat
    if nat is None:
        return {}
    return {str(topology.host(n).address_on(nat.inside)): str(a) for n, a in nat.mapped}
