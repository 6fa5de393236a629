"""The capture reader (dpkt) against scapy's dissection, the reader it replaced: on a capture
with every kind of packet the lab sees, both give the same records, field by field.

scapy's reading is kept here as the reference: it took 10 s for one 2 MiB bulk capture, which
is why the lab no longer uses it; the 85 captures of a whole conformance run read the same
with both (25,469 packets) when the change was made.
"""

from __future__ import annotations

import struct
from dataclasses import asdict

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.ipsec import AH, ESP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import PcapReader, wrpcap

from lab.guest.capture import end_frame
from lab.verdicts.wire import IKE_PORTS, Packet, read_capture

FE, BE, GW = "10.10.1.10", "10.10.2.20", "10.10.1.1"


def _scapy_ports(layer):
    for cls in (TCP, UDP):
        if cls in layer:
            return layer[cls].sport, layer[cls].dport
    return None, None


def _scapy_packet(network, time, ip) -> Packet:
    """The former lab.verdicts.wire.classify_packet, as it was."""
    base = dict(network=network, time=time, src=ip.src, dst=ip.dst, raw=bytes(ip), inner_esp=False)
    if ESP in ip and UDP not in ip:
        return Packet(kind="esp", protocol=50, sport=None, dport=None, spi=f"{ip[ESP].spi:08x}", **base)
    if AH in ip:
        ah = ip[AH]
        data, nh, inner = bytes(ah.payload), ah.nh, {}
        if nh == 4 and len(data) >= 20:
            inner_ip = IP(data)
            inner = {"inner_src": inner_ip.src, "inner_dst": inner_ip.dst}
            nh, data = inner_ip.proto, bytes(inner_ip.payload)
        sport = dport = None
        if nh in (6, 17) and data:
            sport, dport = _scapy_ports((TCP if nh == 6 else UDP)(data))
        elif nh == 1 and len(data) >= 8 and ICMP(data).type in (0, 8):
            sport = dport = ICMP(data).id
        return Packet(kind="ah", protocol=nh, sport=sport, dport=dport, spi=f"{ah.spi:08x}",
                      **{**base, "inner_esp": nh == 50}, **inner)
    if UDP in ip and (ip[UDP].sport in IKE_PORTS or ip[UDP].dport in IKE_PORTS):
        udp = ip[UDP]
        payload = bytes(udp.payload)
        if 4500 in (udp.sport, udp.dport) and len(payload) >= 8 and payload[:4] != b"\0\0\0\0":
            return Packet(kind="esp", protocol=50, sport=udp.sport, dport=udp.dport, spi=payload[:4].hex(), **base)
        return Packet(kind="ike", protocol=17, sport=udp.sport, dport=udp.dport, spi=None, **base)
    if ICMP in ip and ip[ICMP].type in (0, 8):
        icmp = ip[ICMP]
        return Packet(kind="clear", protocol=1, sport=icmp.id, dport=icmp.id, spi=None,
                      payload=max(ip.len - ip.ihl * 4 - 8, 0), **base)
    sport, dport = _scapy_ports(ip)
    kind = "clear" if sport is not None or ip.proto == 1 else "other"
    payload = 0
    if TCP in ip:
        payload = max(ip.len - ip.ihl * 4 - ip[TCP].dataofs * 4, 0)
    elif UDP in ip:
        payload = max(ip[UDP].len - 8, 0)
    return Packet(kind=kind, protocol=ip.proto, sport=sport, dport=dport, spi=None, payload=payload, **base)


def _scapy_read(network, path):
    with PcapReader(path) as reader:
        return [_scapy_packet(network, float(f.time), f[IP]) for f in reader if IP in f]


def _every_kind():
    tcp = TCP(sport=40000, dport=80, flags="PA") / Raw(b"LABPROBE-p1-aa user:secret")
    inner = IP(src=FE, dst=BE) / tcp
    return [
        Ether() / IP(src=FE, dst=BE) / TCP(sport=40000, dport=80, flags="S"),  # short: padded frame
        Ether() / IP(src=FE, dst=BE) / tcp,
        Ether() / IP(src=FE, dst=BE) / UDP(sport=40001, dport=88) / Raw(b"LABPROBE-p2-bb"),
        Ether() / IP(src=FE, dst=BE) / ICMP(type=8, id=77) / Raw(b"LABPROBE-p3-cc"),
        Ether() / IP(src=BE, dst=FE) / ICMP(type=0, id=77) / Raw(b"LABPROBE-p3-cc"),
        Ether() / IP(src=BE, dst=FE) / ICMP(type=3, code=3) / IP(src=FE, dst=BE) / UDP(sport=500, dport=500),
        Ether() / IP(src=FE, dst=BE) / UDP(sport=500, dport=500) / Raw(b"\x11" * 40),
        Ether() / IP(src=FE, dst=BE) / UDP(sport=4500, dport=4500) / Raw(b"\0\0\0\0" + b"\x22" * 40),  # IKE, non-ESP marker
        Ether() / IP(src=FE, dst=BE) / UDP(sport=4500, dport=4500) / Raw(b"\xc0\x01\x02\x03" + b"\x33" * 40),  # NAT-T ESP
        Ether() / IP(src=FE, dst=BE) / ESP(spi=0xC02F0CBE, seq=1) / Raw(b"x" * 60),
        Ether() / IP(src=FE, dst=BE) / AH(spi=0xC1A6EAAA, seq=1, nh=6, payloadlen=4, icv=b"\0" * 12) / tcp,
        Ether() / IP(src=FE, dst=BE) / AH(spi=0xC1A6EAAB, seq=2, nh=17, payloadlen=4, icv=b"\0" * 12)
        / UDP(sport=40001, dport=88) / Raw(b"z"),
        Ether() / IP(src=FE, dst=BE) / AH(spi=0xC1A6EAAC, seq=3, nh=1, payloadlen=4, icv=b"\0" * 12)
        / ICMP(type=8, id=9) / Raw(b"ping"),
        Ether() / IP(src=FE, dst=GW) / AH(spi=0xC1A6EAAD, seq=4, nh=4, payloadlen=4, icv=b"\0" * 12) / inner,  # tunnel
        Ether() / IP(src=FE, dst=BE) / AH(spi=0xC1A6EAAE, seq=5, nh=50, payloadlen=4, icv=b"\0" * 12)
        / ESP(spi=0xC5791652, seq=1) / Raw(b"q" * 30),  # AH around ESP
        Ether() / IP(src=FE, dst=BE, flags="MF") / UDP(sport=5000, dport=5001) / Raw(b"a" * 100),
        Ether() / IP(src=FE, dst=BE, frag=10) / Raw(b"b" * 40),  # a later fragment
        Ether() / IP(src=FE, dst=BE, proto=47) / Raw(b"gre?"),
        Ether() / Dot1Q(vlan=5) / IP(src=FE, dst=BE) / TCP(sport=1, dport=2),
        Ether() / ARP(psrc=FE, pdst=BE),
        Ether(end_frame("dmz", 12345)),  # the lab's end of capture (lab.guest.capture.drain)
    ]


def test_dpkt_reads_every_kind_as_scapy_did(tmp_path):
    frames = _every_kind()
    for i, f in enumerate(frames):
        f.time = 1_000_000.0 + i * 0.25
    path = str(tmp_path / "dmz.pcap")
    wrpcap(path, frames)
    ours, theirs = read_capture("dmz", path), _scapy_read("dmz", path)
    assert len(ours) == len(theirs) == len(frames) - 2  # all but ARP and the end frame
    for a, b in zip(ours, theirs):
        assert asdict(a) == asdict(b)
    kinds = [p.kind for p in ours]
    assert kinds.count("ah") == 5 and kinds.count("esp") == 2 and kinds.count("ike") == 2


def test_a_capture_cut_at_the_snap_length_still_reads(tmp_path):
    path = str(tmp_path / "cut.pcap")
    big = bytes(Ether() / IP(src=FE, dst=BE) / TCP(sport=40000, dport=80) / Raw(b"d" * 1400))
    with open(path, "wb") as f:  # as tcpdump -s 128 writes it: 128 bytes kept of a longer frame
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 128, 1))
        f.write(struct.pack("<IIII", 1_000_000, 0, 128, len(big)) + big[:128])
    ours, theirs = read_capture("dmz", path), _scapy_read("dmz", path)
    assert asdict(ours[0]) == asdict(theirs[0])
    assert ours[0].payload == 1400 and len(ours[0].raw) == 128 - 14
