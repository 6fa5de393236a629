"""A host's links, addresses and routes, set over rtnetlink from the executor's own thread.

Runs inside the lab kernel. `ip -n NS -batch` cost one process per host, 0.1-0.2 s of the
guest's one CPU each (5 s of a 41-host bring-up); the same few netlink requests from a thread
that has entered the namespace cost milliseconds. Only what a lab host needs: bring a link up,
add an IPv4 address (as `ip addr add A/N dev IF`), add a default route via a gateway.
Why not pyroute2, the field's library for this: importing it (0.9.7) took 0.4-0.8 s on the
host (3 Dec, load 3-5), which in the guest's 5-15x slower system calls would cost more than
the `ip` processes it replaces; these three requests need 90 lines of struct packing.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

RTM_NEWLINK, RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE = 16, 20, 21, 24
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR = 2
IFF_UP = 0x1
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_GATEWAY = 5
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1


def _attr(kind: int, data: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(data), kind) + data + b"\0" * (-len(data) % 4)


def _message(kind: int, flags: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, 0, 0) + body


def link_up(ifname: str) -> tuple[str, bytes]:
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, IFF_UP, IFF_UP) + _attr(IFLA_IFNAME, ifname.encode() + b"\0")
    return f"link set {ifname} up", _message(RTM_NEWLINK, 0, body)


def link_down(ifname: str) -> tuple[str, bytes]:
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, IFF_UP) + _attr(IFLA_IFNAME, ifname.encode() + b"\0")
    return f"link set {ifname} down", _message(RTM_NEWLINK, 0, body)


def _address_body(cidr: str, index: int) -> bytes:
    iface = ipaddress.ip_interface(cidr)
    raw = iface.ip.packed
    body = struct.pack("=BBBBI", socket.AF_INET, iface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    return body + _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw)


def add_address(cidr: str, ifname: str, index: int) -> tuple[str, bytes]:
    return f"addr add {cidr} dev {ifname}", _message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, _address_body(cidr, index))


def del_address(cidr: str, ifname: str, index: int) -> tuple[str, bytes]:
    return f"addr del {cidr} dev {ifname}", _message(RTM_DELADDR, 0, _address_body(cidr, index))


def add_default_route(via: str) -> tuple[str, bytes]:
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE,
                       RTN_UNICAST, 0) + _attr(RTA_GATEWAY, ipaddress.ip_address(via).packed)
    return f"route add default via {via}", _message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)


def host_requests(host: dict, index) -> list[tuple[str, bytes]]:
    """What `ip` would be told for this host, in its order: lo up; each interface's address,
    then the link up (the connected route comes with the link); VIPs and NAT addresses; the
    default route. `index(ifname)` gives an interface's index in the host's namespace."""
    reqs = [link_up("lo")]
    for i in host["interfaces"]:
        reqs += [add_address(i["address"], i["ifname"], index(i["ifname"])), link_up(i["ifname"])]
    for a in host.get("vips", []) + (host.get("firewall") or {}).get("addresses", []):
        reqs.append(add_address(a["address"], a["ifname"], index(a["ifname"])))
    for r in host["routes"]:
        if r["dst"] != "default":
            raise ValueError(f"route to {r['dst']}: only a default route is supported")
        reqs.append(add_default_route(r["via"]))
    return reqs


def _errno(answer: bytes) -> int:
    """The error code of the kernel's ACK (0: done)."""
    length, kind = struct.unpack_from("=IH", answer, 0)
    if kind != NLMSG_ERROR:
        return 0
    return -struct.unpack_from("=i", answer, 16)[0]


def configure(ns: str, host: dict, inside) -> None:
    """Set the host's links, addresses and routes in its namespace (`inside(ns)` puts this
    thread there: lab.guest.netns); the first refusal raises, naming the request as `ip`
    would have been given it."""
    apply(ns, lambda index: host_requests(host, index), inside, f"configuring host {host['name']}")


def apply(ns: str, requests, inside, doing: str) -> None:
    """Send `requests(index)` (a list of (what, message); `index(ifname)` resolves an interface
    in the namespace) in namespace `ns`, in order; the first refusal raises "`doing` failed"."""
    with inside(ns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            reqs = requests(socket.if_nametoindex)  # resolved in the namespace
        except OSError as exc:
            s.close()
            raise RuntimeError(f"{doing} failed: {exc.strerror or exc}") from None
    with s:
        s.settimeout(10)
        for what, msg in reqs:
            s.send(msg)
            err = _errno(s.recv(65536))
            if err:
                raise RuntimeError(f"{doing} failed: {what}: {os.strerror(err)}")
