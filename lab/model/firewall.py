"""The `firewall:` section of a firewall host and the top-level `nat:` (behaviours B7, B8).

A firewall filters what it routes between its networks: allow rules by host pair, protocol and
port, then a default action. NAT is a stateless 1:1 translation on a firewall: every host on the
inside network gets an address of its own on the firewall's other network.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from lab.model.raw import Reader, as_bool, as_int, as_list, as_map, as_str
from lab.model.topology import Firewall, FirewallRule, IPv4Address, IPv4Network, Nat, Network

PROTOCOLS = ("tcp", "udp", "icmp", "esp", "ah")


class FirewallReader(Reader):
    """Reads `firewall:` on hosts and `nat:` once the hosts are built."""

    def read_firewalls(self) -> None:
        for name, spec in self.raw_hosts.items():
            raw = as_map(spec).get("firewall") if isinstance(spec, dict) else None
            if raw is None or name not in self.hosts:
                continue
            path = ("hosts", name, "firewall")
            host = self.hosts[name]
            if host.role != "firewall":
                self.error(path, f"only a host with role firewall has a firewall section "
                           f"({name} is {host.role})")
            elif not host.forwards:
                self.error(path, f"{name} is on one network only: it routes nothing to filter")
            spec = as_map(raw)
            rules = tuple(r for i, item in enumerate(as_list(spec.get("allow")))
                          if (r := self._allow(path + ("allow", i), as_map(item))))
            default = spec.get("default", "drop")
            self.hosts[name] = replace(host, firewall=Firewall(
                default=default if default in ("drop", "accept") else "drop", allow=rules))

    def _allow(self, path, raw: dict) -> FirewallRule | None:
        ends = []
        for key in ("from", "to"):
            end = as_str(raw.get(key))
            if end is None:
                return None
            if end != "any" and end not in self.raw_hosts:
                self.no_host(path + (key,), end, "; use any or a host name")
                return None
            ends.append(end)
        protocol = raw.get("protocol")
        if isinstance(protocol, int) and not isinstance(protocol, bool):
            protocol = {50: "esp", 51: "ah", 6: "tcp", 17: "udp", 1: "icmp"}.get(protocol, str(protocol))
        elif protocol not in PROTOCOLS:
            protocol = None  # `any`, or a wrong value the schema reported
        port = as_int(raw.get("port"))
        if port is not None and protocol not in ("tcp", "udp"):
            self.error(path + ("port",), f"needs protocol tcp or udp (protocol is {protocol or 'any'})")
        if ends[0] == ends[1] and ends[0] != "any":
            self.error(path + ("to",), f"from and to are the same host {ends[0]!r}")
        return FirewallRule(ends[0], ends[1], protocol, port,
                            as_bool(raw.get("both_directions"), True), self.doc.where(path))

    def read_nat(self, networks: dict[str, Network]) -> Nat | None:
        raw = self.raw.get("nat")
        if not isinstance(raw, dict):
            return None
        on, inside = as_str(raw.get("on")), as_str(raw.get("from"))
        if on is None or inside is None:
            return None
        if on not in self.hosts:
            self.no_host(("nat", "on"), on)
            return None
        fw = self.hosts[on]
        nets = [i.network for i in fw.interfaces]
        if inside not in nets:
            self.error(("nat", "from"), f"{on} has no interface on {inside!r}; its networks are "
                       f"{', '.join(nets)}")
            return None
        outside = [n for n in nets if n != inside]
        if not outside:
            self.error(("nat", "on"), f"{on} is on one network only: it cannot translate")
            return None
        if outside[0] not in networks:
            return None  # a network that is missing or not a subnet: already reported
        out_net = networks[outside[0]]
        used = {a for h in self.hosts.values() for a in h.addresses}
        used |= {c.vip for c in self.clusters.values()}
        free = (a for a in _from_the_top(out_net.subnet) if a not in used)
        mapped: list[tuple[str, IPv4Address]] = []
        for h in self.hosts.values():
            if h.name != on and h.address_on(inside) is not None:
                address = next(free, None)
                if address is None:
                    self.error(("nat",), f"no free address left on {out_net.name} for {h.name}")
                    return None
                mapped.append((h.name, address))
        return Nat(on, inside, out_net.name, tuple(mapped))


def _from_the_top(subnet: IPv4Network) -> Iterator[IPv4Address]:
    """The subnet's host addresses, highest first, one at a time: a /8 has 16 million."""
    if subnet.prefixlen >= 31:
        yield from reversed(list(subnet.hosts()))
        return
    for number in range(int(subnet.broadcast_address) - 1, int(subnet.network_address), -1):
        yield IPv4Address(number)
