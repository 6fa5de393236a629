"""The classifier on every protocol under every protection, on captures written here.

tcp, udp and icmp (echo) crossed as ESP, AH or clear, on the paths that change what a capture
holds: one shared network, across a router (the same packets on both networks), and tunnel mode
between gateways (the flow's addresses only inside). Each capture is the exchange a probe makes:
request and answer, the marker in the request, written with scapy as the kernel would send it.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.ipsec import AH, ESP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from lab.model.services import parse_service
from lab.model.topology import Expectation, Result
from lab.verdicts.classify import child_sas, judge
from lab.verdicts.model import Inconclusive
from lab.verdicts.wire import read_capture

FE, BE = "10.10.1.10", "10.10.2.20"
GW_FE, GW_BE = "10.10.1.1", "10.10.2.1"  # tunnel gateways' outer addresses
T0 = 2_000_000.0
MARKER, WIRE = "LABPROBE-p1-0123abcd", "ZmFrZS1sb2dpbg=="
SPI_OUT, SPI_IN = 0xC0000001, 0xC0000002  # fe's outbound and inbound SPIs
SERVICES = {"tcp": ("http", 80), "udp": ("udp/9999", 9999), "icmp": ("icmp", 0)}
SPORT = 40123  # tcp/udp source port; the echo id for icmp


def _frame(ip, t):
    p = Ether() / ip
    p.time = t
    return p


def _transport(proto: str, forward: bool, data: bytes):
    """The flow's own transport header and data, one direction."""
    _, port = SERVICES[proto]
    if proto == "icmp":
        return ICMP(type=8 if forward else 0, id=SPORT, seq=1) / Raw(data)
    if proto == "tcp":
        s, d = (SPORT, port) if forward else (port, SPORT)
        return TCP(sport=s, dport=d, flags="PA") / Raw(data)
    s, d = (SPORT, port) if forward else (port, SPORT)
    return UDP(sport=s, dport=d) / Raw(data)


def _nh(proto: str) -> int:
    return {"tcp": 6, "udp": 17, "icmp": 1}[proto]


def _ah(inner_proto: int):
    # HMAC-SHA1-96: a 12-byte ICV, so the AH header is 24 bytes (payloadlen = 6 - 2).
    return AH(spi=SPI_OUT, nh=inner_proto, payloadlen=4, seq=1, icv=b"\x5a" * 12)


def _packets(proto: str, kind: str, tunnel: bool, null_cipher: bool = False) -> list:
    """Request (carrying marker and credential) and answer, as they cross one network."""
    data_req = f"{MARKER} {WIRE}\n".encode()
    data_rep = b"OK " + MARKER.encode()
    out = []
    for forward, data, t in ((True, data_req, T0 + 0.2), (False, data_rep, T0 + 0.3)):
        src, dst = (FE, BE) if forward else (BE, FE)
        outer_src, outer_dst = ((GW_FE, GW_BE) if forward else (GW_BE, GW_FE)) if tunnel else (src, dst)
        inner = _transport(proto, forward, data)
        if tunnel:
            inner = IP(src=src, dst=dst) / inner
        spi = SPI_OUT if forward else SPI_IN
        if kind == "clear":
            ip = IP(src=src, dst=dst) / _transport(proto, forward, data)
        elif kind == "ah":
            ah = _ah(4 if tunnel else _nh(proto))
            ah.spi = spi
            ip = IP(src=outer_src, dst=outer_dst) / ah / inner
        else:  # ESP: encrypted bytes, or with the null cipher the inner packet itself, readable
            body = bytes(inner) if null_cipher else bytes(b ^ 0xA5 for b in bytes(inner))
            ip = IP(src=outer_src, dst=outer_dst) / ESP(spi=spi, seq=1) / Raw(body + b"\x00" * 14)
        out.append(_frame(IP(bytes(ip)), t))  # built, then parsed back: as a capture holds it
    return out


def _sas(proto: str, protection: str, tunnel: bool) -> dict:
    """list-sas as charon prints it, on the host (or gateway) that owns the SA."""
    sel = {"tcp": "[tcp/http]", "udp": "[udp/9999]", "icmp": "[icmp]"}[proto]
    child = {"name": "r", "state": "INSTALLED", "mode": "TUNNEL" if tunnel else "TRANSPORT",
             "protocol": protection.upper(), "spi-in": f"{SPI_IN:08x}", "spi-out": f"{SPI_OUT:08x}",
             "local-ts": [f"{FE}/32[{proto}]"], "remote-ts": [f"{BE}/32{sel}"]}
    owner, local, remote = ("gwa", GW_FE, GW_BE) if tunnel else ("fe", FE, BE)
    return {owner: [{"rule-r": {"local-host": local, "remote-host": remote, "child-sas": {"r-1": child}}}]}


def _probe(proto: str) -> tuple[dict, dict]:
    service, port = SERVICES[proto]
    plan = {"id": "p1", "src": "fe", "dst": "be", "src_address": FE, "dst_address": BE, "protocol": proto,
            "port": port, "service": service, "marker": MARKER, "credential_on_wire": WIRE, "timeout": 10.0}
    outcome = {"id": "p1", "delivered": True, "error": None, "sport": SPORT, "t_start": T0,
               "t_end": T0 + 0.4, "t_reply": T0 + 0.35}
    return plan, outcome


def _judge(tmp_path, proto: str, kind: str, path: str, expected: str, null_cipher: bool = False):
    tunnel = path == "tunnel"
    frames = _packets(proto, kind, tunnel, null_cipher)
    networks = ["dmz", "internal"] if path in ("router", "tunnel") else ["dmz"]
    packets = []
    for net in networks:  # a router forwards the same packets onto its other network
        wrpcap(str(tmp_path / f"{net}.pcap"), frames)
        packets += read_capture(net, str(tmp_path / f"{net}.pcap"))
    rows = child_sas(_sas(proto, kind, tunnel)) if kind != "clear" else []
    plan, outcome = _probe(proto)
    service, _ = SERVICES[proto]
    exp = Expectation("fe", "be", parse_service(service), Result(expected))
    return judge(plan, outcome, [{"marker": MARKER}], packets, rows, networks, exp)


# A tunnel carries nothing in clear: clear is judged on the other two paths.
PATHS = [(k, p) for k in ("esp", "ah", "clear") for p in ("one-network", "router", "tunnel")
         if (k, p) != ("clear", "tunnel")]


@pytest.mark.parametrize("kind,path", PATHS)
@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
def test_every_protocol_under_every_protection_is_judged_as_it_crossed(tmp_path, proto, kind, path):
    v = _judge(tmp_path, proto, kind, path, kind)
    assert v.observed == kind, v.reason
    assert v.ok
    nets = 2 if path in ("router", "tunnel") else 1
    counted = {"esp": v.evidence.esp_packets, "ah": v.evidence.ah_packets, "clear": v.evidence.clear_packets}
    assert counted[kind] == 2 * nets and sum(counted.values()) == 2 * nets
    # Readable exactly when not encrypted: in clear and under AH, never under (real) ESP.
    assert v.evidence.marker_in_clear is (kind != "esp")
    assert v.evidence.credential_in_clear is (kind != "esp")


@pytest.mark.parametrize("kind", ["esp", "ah"])
@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
def test_a_protected_flow_expected_clear_fails(tmp_path, proto, kind):
    v = _judge(tmp_path, proto, kind, "one-network", "clear")
    assert v.observed == kind and not v.ok


@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
def test_the_other_flows_echo_id_or_port_is_not_this_flow(tmp_path, proto):
    """Under AH the inner header names the flow: another echo id or port is someone else's."""
    frames = _packets(proto, "ah", tunnel=False)
    wrpcap(str(tmp_path / "dmz.pcap"), frames)
    packets = read_capture("dmz", str(tmp_path / "dmz.pcap"))
    plan, outcome = _probe(proto)
    outcome["sport"] = SPORT + 1
    service, _ = SERVICES[proto]
    v = judge(plan, outcome, [], packets, [], ["dmz"], Expectation("fe", "be", parse_service(service), Result.AH))
    assert v.observed is Inconclusive.UNOBSERVED


@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
def test_ah_icmp_and_tunnel_ah_read_the_inner_header(tmp_path, proto):
    wrpcap(str(tmp_path / "t.pcap"), _packets(proto, "ah", tunnel=True))
    request, reply = read_capture("dmz", str(tmp_path / "t.pcap"))
    assert (request.src, request.dst) == (GW_FE, GW_BE)
    assert (request.flow_src, request.flow_dst) == (FE, BE) and request.protocol == _nh(proto)
    assert request.sport == SPORT and reply.dport == SPORT


@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
def test_esp_with_the_null_cipher_shows_the_marker(tmp_path, proto):
    """ESP null (integrity only): still ESP, but the marker and the login are readable."""
    v = _judge(tmp_path, proto, "esp", "one-network", "esp", null_cipher=True)
    assert v.observed == "esp" and v.ok
    assert v.evidence.marker_in_clear and v.evidence.credential_in_clear
    assert "marker readable on the wire" in v.reason and "marker never readable" not in v.reason


@pytest.mark.parametrize("selector", ["[icmp]", "[icmp/8]", "[icmp/0]", ""])
def test_esp_for_icmp_is_attributed_whatever_type_the_selector_names(tmp_path, selector):
    """An echo request (type 8) and its reply (type 0) share one SA: its ICMP selector, with or
    without a type, covers the flow; a TCP-only SA does not."""
    wrpcap(str(tmp_path / "dmz.pcap"), _packets("icmp", "esp", tunnel=False))
    packets = read_capture("dmz", str(tmp_path / "dmz.pcap"))
    sas = _sas("icmp", "esp", tunnel=False)
    child = sas["fe"][0]["rule-r"]["child-sas"]["r-1"]
    child["local-ts"], child["remote-ts"] = [f"{FE}/32{selector}"], [f"{BE}/32{selector}"]
    plan, outcome = _probe("icmp")
    exp = Expectation("fe", "be", parse_service("icmp"), Result.ESP)
    assert judge(plan, outcome, [], packets, child_sas(sas), ["dmz"], exp).observed == "esp"
    child["local-ts"], child["remote-ts"] = [f"{FE}/32[tcp]"], [f"{BE}/32[tcp/http]"]
    assert judge(plan, outcome, [], packets, child_sas(sas), ["dmz"], exp).observed is Inconclusive.UNOBSERVED
