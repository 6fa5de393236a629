"""Windows default exemptions (NoDefaultExempt) as pass shunts that outrank every rule.

  0  Windows 2000/XP: Kerberos (TCP/UDP 88, by source or destination port), RSVP (IP 46),
     broadcast, multicast and IKE bypass all filters
  1  Kerberos and RSVP no longer exempt
  2  broadcast and multicast no longer exempt
  3  Windows Server 2003: only IKE
IKE needs no shunt: charon bypasses its own sockets.
"""

from __future__ import annotations

import ipaddress

from lab.model.topology import Host, Topology

EXEMPTION_PRIORITY = 100  # below every rule's priority number: checked first by the kernel


def exemption_selectors(topology: Topology, host: Host) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (local_ts, remote_ts) of each pass shunt this host's exemption level requires."""
    level = host.exemptions
    me = [f"{a}/32" for a in host.addresses]
    out: dict[str, tuple[list[str], list[str]]] = {}
    if level in (0, 2):
        for proto in ("udp", "tcp"):
            # Windows exempts a packet whose source OR destination port is 88.
            out[f"exempt-kerberos-{proto}-src"] = ([f"{m}[{proto}/88]" for m in me], [f"0.0.0.0/0[{proto}]"])
            out[f"exempt-kerberos-{proto}-dst"] = ([f"{m}[{proto}]" for m in me], [f"0.0.0.0/0[{proto}/88]"])
        out["exempt-rsvp"] = ([f"{m}[46]" for m in me], ["0.0.0.0/0[46]"])
    if level in (0, 1):
        out["exempt-multicast"] = (me, ["224.0.0.0/4"])
        broadcasts = {"255.255.255.255/32"}
        for i in host.interfaces:
            net = topology.network(i.network).subnet
            broadcasts.add(f"{net.broadcast_address}/32")
        out["exempt-broadcast"] = (me, sorted(broadcasts, key=lambda n: ipaddress.ip_network(n)))
    return out


def exemption_children(topology: Topology, host: Host) -> dict[str, dict]:
    return {
        name: {"mode": "pass", "local_ts": local, "remote_ts": remote, "start_action": "trap",
               "priority": str(EXEMPTION_PRIORITY)}
        for name, (local, remote) in exemption_selectors(topology, host).items()
    }
