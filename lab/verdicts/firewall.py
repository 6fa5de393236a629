"""Where was a dropped flow stopped: at a firewall (which filter, its counter) or elsewhere?

Host side. A firewall host stopped a flow when packets of it (the flow's own packets, or the
IKE or ESP packets it needed between the two hosts) reached the firewall on one network while
the probe ran and none of them left on the network towards the destination. The filter that
took them is found by running the firewall's filters (as the plan lists them, in tc's order)
on the first such packet; its counter, read from tc at collect time, goes into the reason.
A flow stopped elsewhere (a host's IPsec policy, a receiver's integrity check) gets None.
"""

from __future__ import annotations

import ipaddress

from lab.fwmatch import matches
from lab.model.services import PROTOCOL_NUMBERS
from lab.verdicts.wire import Packet

SLACK = 0.5
_KINDS = (("clear", "packets of the flow"), ("ike", "IKE packets"), ("esp", "ESP packets"))


class FirewallJudge:
    def __init__(self, plan, results):
        self.firewalls = [h for h in plan.hosts if (h.get("firewall") or {}).get("default")]
        self.counters = results.firewall
        self.aliases = plan.nat_aliases  # inside address -> outside address
        self.inside = {v: k for k, v in self.aliases.items()}
        self.subnets = {n["name"]: ipaddress.ip_network(n["subnet"]) for n in plan.networks}

    def __bool__(self) -> bool:
        return bool(self.firewalls)

    def _names(self, address: str) -> set[str]:
        return {address} | ({self.aliases[address]} if address in self.aliases else set())

    def _net_of(self, fw: dict, address: str) -> dict | None:
        for i in fw["interfaces"]:
            if ipaddress.ip_address(address) in self.subnets[i["network"]]:
                return i
        return None

    def where_dropped(self, probe: dict, packets: list[Packet]) -> str | None:
        start, end = probe["t_start"] - SLACK, (probe["t_end"] or probe["t_start"]) + SLACK
        ports = {probe["sport"], probe["port"]}
        for fw in self.firewalls:
            for a, b in ((probe["src_address"], probe["dst_address"]), (probe["dst_address"], probe["src_address"])):
                came, went = self._net_of(fw, a), self._net_of(fw, b)
                if not came or not went or came is went:
                    continue
                srcs, dsts = self._names(a), self._names(b)
                for kind, words in _KINDS:
                    mine = [p for p in packets if p.kind == kind and p.src in srcs and p.dst in dsts
                            and start <= p.time <= end
                            and (kind != "clear" or {p.sport, p.dport} <= ports)]
                    sent = [p for p in mine if p.network == came["network"]]
                    crossed = [p for p in mine if p.network == went["network"]]
                    if sent and not crossed:
                        found = self._filter(fw, came["ifname"], sent[0])
                        if found is None:
                            continue  # passed the filter, stopped later: not the firewall's doing
                        label, counter = found
                        return (f"dropped at firewall {fw['name']}: {len(sent)} {words} "
                                f"{a} -> {b} reached it on {came['network']}, none left on "
                                f"{went['network']}; its filter '{label}' ({came['ifname']} "
                                f"ingress) counted {counter} packets in the run")
        return None

    def _filter(self, fw: dict, dev: str, p: Packet) -> tuple[str, int] | None:
        """The filter that decided this packet, if it dropped it: (label, its packet counter)."""
        dst = self.inside.get(p.dst, p.dst)  # the NAT filters rewrite before the others look
        proto = {"esp": 50, "ike": 17}.get(p.kind, p.protocol)
        filters = sorted((f for f in fw["firewall"]["filters"] if f["dev"] == dev and f["hook"] == "ingress"
                          and f["kind"] != "nat"), key=lambda f: f["pref"])
        for f in filters:
            if matches(f["match"], p.src, dst, proto, p.sport, p.dport):
                if f["action"] != "drop":
                    return None
                count = next((c["packets"] for c in self.counters.get(fw["name"], [])
                              if c["dev"] == dev and c["hook"] == "ingress" and c["pref"] == f["pref"]), 0)
                return f["label"], count
        return None

    def passed(self, probe: dict) -> str | None:
        """For a delivered flow: the allow filters that match its packets, with their counters
        (behind a tunnel they count the decrypted packets, which no capture shows)."""
        proto = PROTOCOL_NUMBERS[probe["protocol"]]
        notes = []
        for fw in self.firewalls:
            for f in fw["firewall"]["filters"]:
                if f["kind"] != "allow":
                    continue
                fwd = matches(f["match"], probe["src_address"], probe["dst_address"], proto, probe["sport"], probe["port"])
                rev = matches(f["match"], probe["dst_address"], probe["src_address"], proto, probe["port"], probe["sport"])
                if fwd or rev:
                    count = next((c["packets"] for c in self.counters.get(fw["name"], [])
                                  if c["dev"] == f["dev"] and c["hook"] == "ingress" and c["pref"] == f["pref"]), 0)
                    notes.append(f"{f['label']} {'->' if fwd else '<-'} {f['dev']} {count}")
            notes = [n for n in notes if not n.endswith(" 0")] or notes
            if notes:
                return f"firewall {fw['name']} passed it: filter counters " + ", ".join(notes)
        return None
