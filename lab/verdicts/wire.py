"""Read the captures into plain packet records: what crossed each network, by kind.

Host side only (scapy is far too slow to import in the guest). Each packet becomes one
`Packet`: its network, time, addresses, and what it was: a flow's own TCP/UDP/ICMP packet in
clear, ESP (IP protocol 50, or ESP in UDP 4500), AH (IP protocol 51, whose inner header stays
readable: TCP and UDP ports, the ICMP echo id, and in tunnel mode the inner addresses), or IKE
(UDP 500, or 4500 with the non-ESP marker).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.ipsec import AH, ESP
from scapy.layers.l2 import Ether  # noqa: F401  (registers the link type for rdpcap)
from scapy.utils import PcapReader

IKE_PORTS = (500, 4500)


@dataclass(frozen=True)
class Packet:
    network: str
    time: float
    src: str
    dst: str
    kind: str  # "clear" | "esp" | "ah" | "ike" | "other"
    protocol: int  # the transport protocol visible (6, 17, 1, ...), 50 for ESP, inner one for AH
    sport: int | None
    dport: int | None
    spi: str | None  # 8 hex digits, as charon prints them
    inner_esp: bool  # AH around ESP
    raw: bytes  # the IP packet as captured (truncated at the snap length)
    payload: int = 0  # bytes of application data (TCP/UDP payload, ICMP echo data); 0 for handshakes
    # Tunnel-mode AH: the inner packet's addresses, which name the flow (src/dst are the tunnel's).
    inner_src: str | None = None
    inner_dst: str | None = None

    @property
    def flow_src(self) -> str:
        return self.inner_src or self.src

    @property
    def flow_dst(self) -> str:
        return self.inner_dst or self.dst


def _ports(layer) -> tuple[int | None, int | None]:
    for cls in (TCP, UDP):
        if cls in layer:
            return layer[cls].sport, layer[cls].dport
    return None, None


def classify_packet(network: str, time: float, ip) -> Packet:
    raw = bytes(ip)
    base = dict(network=network, time=time, src=ip.src, dst=ip.dst, raw=raw, inner_esp=False)
    if ESP in ip and UDP not in ip:
        return Packet(kind="esp", protocol=50, sport=None, dport=None, spi=f"{ip[ESP].spi:08x}", **base)
    if AH in ip:
        return _ah(ip[AH], base)
    if UDP in ip and (ip[UDP].sport in IKE_PORTS or ip[UDP].dport in IKE_PORTS):
        udp = ip[UDP]
        payload = bytes(udp.payload)
        if 4500 in (udp.sport, udp.dport) and len(payload) >= 8 and payload[:4] != b"\0\0\0\0":
            return Packet(kind="esp", protocol=50, sport=udp.sport, dport=udp.dport,
                          spi=payload[:4].hex(), **base)  # ESP in UDP (NAT traversal)
        return Packet(kind="ike", protocol=17, sport=udp.sport, dport=udp.dport, spi=None, **base)
    if ICMP in ip and ip[ICMP].type in (0, 8):  # echo: the id plays the part of the ports
        icmp = ip[ICMP]
        return Packet(kind="clear", protocol=1, sport=icmp.id, dport=icmp.id, spi=None,
                      payload=max(ip.len - ip.ihl * 4 - 8, 0), **base)
    sport, dport = _ports(ip)
    kind = "clear" if sport is not None or ip.proto == 1 else "other"
    return Packet(kind=kind, protocol=ip.proto, sport=sport, dport=dport, spi=None,
                  payload=_payload_length(ip), **base)


def _ah(ah, base: dict) -> Packet:
    """AH authenticates but does not hide what it carries: read the inner header by AH's
    next-header field (scapy leaves AH's payload undecoded): TCP/UDP ports, the ICMP echo id in
    place of the ports, and in tunnel mode (IP in IP) the inner packet's addresses as well."""
    data, nh, inner_addrs = bytes(ah.payload), ah.nh, {}
    if nh == 4 and len(data) >= 20:  # tunnel mode: the flow is the inner packet
        inner_ip = IP(data)
        inner_addrs = {"inner_src": inner_ip.src, "inner_dst": inner_ip.dst}
        nh, data = inner_ip.proto, bytes(inner_ip.payload)
    sport = dport = None
    if nh in (6, 17) and data:
        sport, dport = _ports((TCP if nh == 6 else UDP)(data))
    elif nh == 1 and len(data) >= 8:
        icmp = ICMP(data)
        if icmp.type in (0, 8):  # echo: the id plays the part of the ports, as in clear
            sport = dport = icmp.id
    return Packet(kind="ah", protocol=nh, sport=sport, dport=dport, spi=f"{ah.spi:08x}",
                  **{**base, "inner_esp": nh == 50}, **inner_addrs)


def _payload_length(ip) -> int:
    """Application bytes, from the length fields (frames shorter than 60 bytes carry padding)."""
    if TCP in ip:
        return max(ip.len - ip.ihl * 4 - ip[TCP].dataofs * 4, 0)
    if UDP in ip:
        return max(ip[UDP].len - 8, 0)
    return 0


def read_capture(network: str, path: str) -> list[Packet]:
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return []
    out = []
    with PcapReader(path) as reader:
        for frame in reader:
            if IP in frame:
                out.append(classify_packet(network, float(frame.time), frame[IP]))
    return out


def has_readable(packets: list[Packet], needle: bytes) -> bool:
    """Is `needle` readable in any packet, whatever protects it? Clear and AH show it, and so
    does ESP with the null cipher; encrypted ESP never can, so no packet is skipped."""
    return any(needle in p.raw for p in packets)

