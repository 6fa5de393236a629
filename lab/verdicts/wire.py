"""Read the captures into plain packet records: what crossed each network, by kind.

Host side only. dpkt reads them (scapy's dissection took 10 s for the 10,000 packets of one 2 MiB
bulk capture, dpkt a fraction of a second); the fields are those scapy's layers gave, and
tests/test_wire_reader.py holds the two readers to the same records. Each packet becomes one
`Packet`: its network, time, addresses, and what it was: a flow's own TCP/UDP/ICMP packet in
clear, ESP (IP protocol 50, or ESP in UDP 4500), AH (IP protocol 51, whose inner header stays
readable: TCP and UDP ports, the ICMP echo id, and in tunnel mode the inner addresses), or IKE
(UDP 500, or 4500 with the non-ESP marker).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import dpkt

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


LINK_IP = {dpkt.pcap.DLT_EN10MB: 14, dpkt.pcap.DLT_LINUX_SLL: 16}
VLAN = (b"\x81\x00", b"\x88\xa8")


def _ip_bytes(link: int, frame: bytes) -> bytes | None:
    """The IPv4 packet a frame carries, else None (ARP, IPv6, ...)."""
    if link in (dpkt.pcap.DLT_RAW, 101, 228):
        return frame if frame[:1] and frame[0] >> 4 == 4 else None
    off = LINK_IP.get(link)
    if off is None:
        return None
    etype = frame[off - 2:off]
    while link == dpkt.pcap.DLT_EN10MB and etype in VLAN:  # 802.1Q / 802.1ad tags
        etype, off = frame[off + 2:off + 4], off + 4
    return frame[off:] if etype == b"\x08\x00" else None


def _header_ports(proto: int, data: bytes) -> tuple[int | None, int | None]:
    """Source and destination port of a TCP or UDP header at the start of data."""
    if proto in (6, 17) and len(data) >= (20 if proto == 6 else 8):
        return int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")
    return None, None


def classify_packet(network: str, time: float, data: bytes) -> Packet | None:
    """One captured IPv4 packet (its bytes from the IP header on) as a Packet; None if unreadable."""
    try:
        ip = dpkt.ip.IP(data)
    except (dpkt.UnpackError, ValueError):
        return None
    raw = data[:ip.len] if ip.len else data  # without the link layer's padding
    hl = ip.hl * 4
    body = raw[hl:]  # the IP payload as captured
    first = ip.offset == 0  # a later fragment carries no transport header
    base = dict(network=network, time=time, src=dpkt.utils.inet_to_str(ip.src),
                dst=dpkt.utils.inet_to_str(ip.dst), raw=raw, inner_esp=False)
    if ip.p == 50 and first and len(body) >= 8:
        return Packet(kind="esp", protocol=50, sport=None, dport=None, spi=body[:4].hex(), **base)
    if ip.p == 51 and first and len(body) >= 12:
        return _ah(body, base)
    sport, dport = _header_ports(ip.p, body) if first else (None, None)
    if ip.p == 17 and sport is not None and (sport in IKE_PORTS or dport in IKE_PORTS):
        payload = body[8:]
        if 4500 in (sport, dport) and len(payload) >= 8 and payload[:4] != b"\0\0\0\0":
            return Packet(kind="esp", protocol=50, sport=sport, dport=dport,
                          spi=payload[:4].hex(), **base)  # ESP in UDP (NAT traversal)
        return Packet(kind="ike", protocol=17, sport=sport, dport=dport, spi=None, **base)
    if ip.p == 1 and first and len(body) >= 8 and body[0] in (0, 8):  # echo: the id plays the part of the ports
        echo_id = int.from_bytes(body[4:6], "big")
        return Packet(kind="clear", protocol=1, sport=echo_id, dport=echo_id, spi=None,
                      payload=max(ip.len - hl - 8, 0), **base)
    kind = "clear" if sport is not None or ip.p == 1 else "other"
    return Packet(kind=kind, protocol=ip.p, sport=sport, dport=dport, spi=None,
                  payload=_payload_length(ip.p, ip.len - hl, body) if sport is not None else 0, **base)


def _ah(body: bytes, base: dict) -> Packet:
    """AH authenticates but does not hide what it carries: read the inner header by AH's
    next-header field: TCP/UDP ports, the ICMP echo id in place of the ports, and in tunnel
    mode (IP in IP) the inner packet's addresses as well."""
    nh, spi = body[0], body[4:8].hex()
    data, inner_addrs = body[(body[1] + 2) * 4:], {}
    if nh == 4 and len(data) >= 20:  # tunnel mode: the flow is the inner packet
        inner = dpkt.ip.IP(data)
        inner_addrs = {"inner_src": dpkt.utils.inet_to_str(inner.src), "inner_dst": dpkt.utils.inet_to_str(inner.dst)}
        end = inner.len if inner.len else len(data)
        nh, data = inner.p, data[inner.hl * 4:end]
    sport, dport = _header_ports(nh, data)
    if nh == 1 and len(data) >= 8 and data[0] in (0, 8):  # echo: the id plays the part of the ports, as in clear
        sport = dport = int.from_bytes(data[4:6], "big")
    return Packet(kind="ah", protocol=nh, sport=sport, dport=dport, spi=spi,
                  **{**base, "inner_esp": nh == 50}, **inner_addrs)


def _payload_length(proto: int, length: int, body: bytes) -> int:
    """Application bytes, from the length fields (frames shorter than 60 bytes carry padding)."""
    if proto == 6:
        return max(length - (body[12] >> 4) * 4, 0)
    if proto == 17:
        return max(int.from_bytes(body[4:6], "big") - 8, 0)
    return 0


def read_capture(network: str, path: str) -> list[Packet]:
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return []
    out = []
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        link = reader.datalink()
        for ts, frame in reader:
            data = _ip_bytes(link, frame)
            packet = classify_packet(network, float(ts), data) if data else None
            if packet:
                out.append(packet)
    return out


def has_readable(packets: list[Packet], needle: bytes) -> bool:
    """Is `needle` readable in any packet, whatever protects it? Clear and AH show it, and so
    does ESP with the null cipher; encrypted ESP never can, so no packet is skipped."""
    return any(needle in p.raw for p in packets)

