"""The classifier: captures + probe outcomes + SAs -> verdicts. Captures are made here with scapy."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.ipsec import AH, ESP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from lab.model.services import parse_service
from lab.model.topology import Expectation, Result
from lab.verdicts.classify import child_sas, judge, observe
from lab.verdicts.model import Inconclusive
from lab.verdicts.wire import read_capture

FE, BE = "10.10.1.10", "10.10.2.20"
T0 = 1_000_000.0
SAS = {"fe": [{"peer-be": {"remote-host": BE, "child-sas": {"fe-be-http-2": {
    "name": "fe-be-http", "state": "INSTALLED", "mode": "TRANSPORT", "protocol": "ESP",
    "spi-in": "ca17170d", "spi-out": "c02f0cbe", "encr-alg": "AES_GCM_16", "encr-keysize": "256",
    "bytes-in": "163", "bytes-out": "293", "packets-in": "4", "packets-out": "6",
    "local-ts": [f"{FE}/32[tcp]"], "remote-ts": [f"{BE}/32[tcp/http]"]}}}}]}


def frame(ip, t):
    p = Ether() / ip
    p.time = t
    return p


def probe(service="http", port=80, sport=40000, marker="LABPROBE-p1-aa", wire="ZmFrZQ=="):
    plan = {"id": "p1", "src": "fe", "dst": "be", "src_address": FE, "dst_address": BE, "protocol": "tcp",
            "port": port, "service": service, "marker": marker, "credential_on_wire": wire, "timeout": 8.0}
    outcome = {"id": "p1", "delivered": True, "error": None, "sport": sport, "t_start": T0,
               "t_end": T0 + 1.2, "t_reply": T0 + 1.1}
    return plan, outcome


def expectation(service, result):
    return Expectation("fe", "be", parse_service(service), Result(result))


@pytest.fixture
def capture(tmp_path):
    def write(name, packets):
        path = tmp_path / f"{name}.pcap"
        wrpcap(str(path), packets)
        return read_capture(name, str(path))
    return write


def test_esp_flow_is_esp_and_attributed_by_spi(capture):
    pkts = capture("dmz", [
        frame(IP(src=FE, dst=BE) / UDP(sport=500, dport=500) / Raw(b"\0" * 40), T0 + 0.01),
        frame(IP(src=FE, dst=BE) / ESP(spi=0xC02F0CBE, seq=1) / Raw(b"x" * 60), T0 + 1.0),
        frame(IP(src=BE, dst=FE) / ESP(spi=0xCA17170D, seq=1) / Raw(b"y" * 60), T0 + 1.0),
        frame(IP(src=FE, dst=BE) / ESP(spi=0x11111111, seq=1) / Raw(b"z" * 60), T0 + 1.0),  # other SA
    ])
    plan, outcome = probe()
    v = judge(plan, outcome, [], pkts, child_sas(SAS), ["dmz"], expectation("http", "esp"))
    assert v.observed == "esp" and v.ok
    assert v.evidence.esp_packets == 2 and v.evidence.clear_packets == 0
    assert v.evidence.spis == ("c02f0cbe", "ca17170d")
    assert v.evidence.sa.child == "fe-be-http" and v.evidence.sa.algorithms == "AES_GCM_16-256"
    assert not v.evidence.marker_in_clear


def test_clear_flow_shows_marker_and_credential(capture):
    plan, outcome = probe(service="smtp", port=25, marker="LABPROBE-p2-bb", wire="c2VjcmV0")
    pkts = capture("dmz", [
        frame(IP(src=FE, dst=BE) / TCP(sport=40000, dport=25, flags="S"), T0),
        frame(IP(src=FE, dst=BE) / TCP(sport=40000, dport=25, flags="PA") /
              Raw(b"EHLO LABPROBE-p2-bb\r\nAUTH PLAIN c2VjcmV0\r\n"), T0 + 0.01),
        frame(IP(src=BE, dst=FE) / TCP(sport=25, dport=40000, flags="A"), T0 + 0.02),
    ])
    v = judge(plan, outcome, [], pkts, child_sas(SAS), ["dmz"], expectation("smtp", "esp"))
    assert v.observed == "clear" and not v.ok
    assert v.evidence.clear_packets == 3
    assert v.evidence.marker_in_clear and v.evidence.credential_in_clear
    assert "marker readable" in v.reason


def test_esp_expected_but_a_data_packet_of_the_flow_leaked_is_clear(capture):
    pkts = capture("dmz", [
        frame(IP(src=FE, dst=BE) / TCP(sport=40000, dport=80, flags="PA") / Raw(b"GET /LABPROBE-p1-aa"), T0),
        frame(IP(src=FE, dst=BE) / ESP(spi=0xC02F0CBE, seq=1) / Raw(b"x" * 60), T0 + 1.0),
    ])
    plan, outcome = probe()
    v = judge(plan, outcome, [], pkts, child_sas(SAS), ["dmz"], expectation("http", "esp"))
    assert v.observed == "clear"


def test_a_handshake_accepted_in_clear_before_ipsec_is_not_a_leak(capture):
    """Inbound passthrough: the first SYN crosses in clear, everything after it is ESP."""
    pkts = capture("dmz", [
        frame(IP(src=FE, dst=BE) / TCP(sport=40000, dport=80, flags="S"), T0),
        frame(IP(src=FE, dst=BE) / ESP(spi=0xC02F0CBE, seq=1) / Raw(b"x" * 60), T0 + 1.0),
    ])
    plan, outcome = probe()
    v = judge(plan, outcome, [], pkts, child_sas(SAS), ["dmz"], expectation("http", "esp"))
    assert v.observed == "esp"
    assert v.evidence.clear_handshake == 1
    assert "1 payload-less packets in clear before IPsec took over" in v.reason


def test_tampered_flow_is_dropped_only_if_the_receiver_counted_it(capture):
    plan, outcome = probe()
    plan["tamper"] = {"router": "fw"}
    outcome.update(delivered=False, error="timed out", t_reply=None, t_end=T0 + 10)
    v = judge(plan, dict(outcome), [], [], child_sas(SAS), ["dmz"], expectation("http", "dropped"))
    assert v.observed is Inconclusive.DROPPED_ELSEWHERE and not v.ok
    outcome["xfrm_errors"] = {"XfrmInStateProtoError": 4}
    v = judge(plan, outcome, [], [], child_sas(SAS), ["dmz"], expectation("http", "dropped"))
    assert v.observed == "dropped" and v.ok and "XfrmInStateProtoError +4" in v.reason


def test_other_flows_in_clear_do_not_count(capture):
    pkts = capture("dmz", [
        frame(IP(src=FE, dst=BE) / TCP(sport=40001, dport=80, flags="S"), T0),  # another source port
        frame(IP(src=FE, dst=BE) / ESP(spi=0xC02F0CBE, seq=1) / Raw(b"x" * 60), T0 + 1.0),
    ])
    plan, outcome = probe()
    assert judge(plan, outcome, [], pkts, child_sas(SAS), ["dmz"], expectation("http", "esp")).observed == "esp"


def test_esp_outside_the_probe_lifetime_is_not_attributed(capture):
    pkts = capture("dmz", [frame(IP(src=FE, dst=BE) / ESP(spi=0xC02F0CBE, seq=1) / Raw(b"x" * 60), T0 + 30)])
    plan, outcome = probe()
    v = judge(plan, outcome, [], pkts, child_sas(SAS), ["dmz"], expectation("http", "esp"))
    assert v.observed is Inconclusive.UNOBSERVED and not v.ok


def test_not_delivered_is_dropped_with_the_reason(capture):
    plan, outcome = probe()
    outcome.update(delivered=False, error="timed out", t_reply=None, t_end=T0 + 8)
    v = judge(plan, outcome, [], [], child_sas(SAS), ["dmz"], expectation("http", "dropped"))
    assert v.observed == "dropped" and v.ok
    assert "timed out" in v.reason and "never reached the listener" in v.reason


def test_ah_shows_inner_ports_and_payload(capture):
    pkts = capture("dmz", [
        frame(IP(src=FE, dst=BE) / AH(spi=0x1234, nh=6, payloadlen=4, icv=b"\0" * 12) /
              TCP(sport=40000, dport=110, flags="PA") / Raw(b"USER LABPROBE-p1-aa\r\nPASS fake\r\n"), T0 + 1),
    ])
    assert pkts[0].kind == "ah" and (pkts[0].sport, pkts[0].dport) == (40000, 110)
    plan, outcome = probe(service="pop3", port=110, wire="fake")
    v = judge(plan, outcome, [], pkts, [], ["dmz"], expectation("pop3", "ah"))
    assert v.observed == "ah" and v.evidence.marker_in_clear and v.evidence.credential_in_clear


def test_esp_in_udp_4500_is_esp_and_ike_on_4500_is_ike(capture):
    pkts = capture("dmz", [
        frame(IP(src=FE, dst=BE) / UDP(sport=4500, dport=4500) / Raw(b"\xc0\x2f\x0c\xbe" + b"\0" * 30), T0 + 1),
        frame(IP(src=FE, dst=BE) / UDP(sport=4500, dport=4500) / Raw(b"\0\0\0\0" + b"\1" * 30), T0 + 1),
    ])
    assert [p.kind for p in pkts] == ["esp", "ike"]
    assert pkts[0].spi == "c02f0cbe"


@pytest.mark.parametrize("delivered,kinds,expected", [
    (False, {"esp"}, "dropped"), (True, {"clear", "esp"}, "clear"), (True, {"esp"}, "esp"),
    (True, set(), "unobserved"),
])
def test_observe_rules(delivered, kinds, expected):
    class P:
        def __init__(self, kind):
            self.kind, self.inner_esp, self.payload = kind, False, 10
    assert observe(delivered, [P(k) for k in kinds]) == expected


def test_child_sas_table_rows():
    rows = child_sas(SAS)
    assert len(rows) == 1
    r = rows[0]
    assert (r.host, r.peer, r.protocol, r.mode, r.spi_in, r.bytes_out) == ("fe", BE, "ESP", "TRANSPORT", "ca17170d", 293)


# Tunnels through a gateway (B10) and NAT (B8): ESP between an SA's own endpoints.

FW_DMZ, FW_INT, FE_OUT = "10.10.1.1", "10.10.2.1", "10.10.2.254"


def _tunnel_sas():
    def child(name, spi_in, spi_out, local_ts, remote_ts):
        return {"name": name, "state": "INSTALLED", "mode": "TUNNEL", "protocol": "ESP", "spi-in": spi_in,
                "spi-out": spi_out, "local-ts": [local_ts], "remote-ts": [remote_ts]}
    return {
        "fe": [{"peer-fw": {"local-host": FE, "remote-host": FW_DMZ, "child-sas": {
            "a": child("to-be", "c1000001", "c1000002", f"{FE}/32[tcp]", f"{BE}/32[tcp/http]")}}}],
        "fw": [{"peer-be": {"local-host": FW_INT, "remote-host": BE, "child-sas": {
            "b": child("leg-be", "c2000001", "c2000002", f"{FE}/32[tcp]", f"{BE}/32[tcp/http]")}}}],
        # A gateway SA for other traffic: its ESP must not count.
        "gw": [{"peer-be": {"local-host": FW_INT, "remote-host": BE, "child-sas": {
            "c": child("other", "c3000001", "c3000002", f"{FE}/32[udp]", f"{BE}/32[udp/53]")}}}],
    }


def test_tunnel_legs_esp_is_attributed_by_each_legs_sa(capture):
    pkts = capture("dmz", [
        frame(IP(src=FE, dst=FW_DMZ) / ESP(spi=0xC1000002, seq=1) / Raw(b"x" * 60), T0 + 1.0),
        frame(IP(src=FW_DMZ, dst=FE) / ESP(spi=0xC1000001, seq=1) / Raw(b"x" * 60), T0 + 1.0),
    ]) + capture("internal", [
        frame(IP(src=FW_INT, dst=BE) / ESP(spi=0xC2000002, seq=1) / Raw(b"x" * 60), T0 + 1.0),
        frame(IP(src=FW_INT, dst=BE) / ESP(spi=0xC3000002, seq=1) / Raw(b"x" * 60), T0 + 1.0),  # other SA
    ])
    plan, outcome = probe()
    v = judge(plan, outcome, [{"marker": plan["marker"]}], pkts, child_sas(_tunnel_sas()), ["dmz", "internal"],
              expectation("http", "esp"))
    assert v.observed == "esp"
    assert {(s.network, s.esp) for s in v.evidence.segments} == {("dmz", 2), ("internal", 1)}
    assert "c3000002" not in v.evidence.spis


def test_esp_with_the_flows_spi_between_unrelated_addresses_does_not_count(capture):
    pkts = capture("dmz", [frame(IP(src="10.10.1.99", dst=FW_DMZ) / ESP(spi=0xC1000002, seq=1) / Raw(b"x" * 60), T0 + 1.0)])
    plan, outcome = probe()
    v = judge(plan, outcome, [], pkts, child_sas(_tunnel_sas()), ["dmz"], expectation("http", "esp"))
    assert v.observed is Inconclusive.UNOBSERVED


def test_natted_clear_packets_of_the_flow_still_count_as_clear(capture):
    pkts = capture("internal", [frame(IP(src=FE_OUT, dst=BE) / TCP(sport=40000, dport=80, flags="PA") / Raw(b"GET /"), T0 + 0.5)])
    plan, outcome = probe()
    plan["nat_aliases"] = {FE: FE_OUT}
    v = judge(plan, outcome, [], pkts, [], ["internal"], expectation("http", "esp"))
    assert v.observed == "clear"
    plan["nat_aliases"] = {}
    assert judge(plan, outcome, [], pkts, [], ["internal"], expectation("http", "esp")).observed is Inconclusive.UNOBSERVED


def test_esp_in_udp_through_nat_is_attributed_by_the_responders_sa(capture):
    sas = {"be": [{"peer-any": {"local-host": BE, "remote-host": FE_OUT, "child-sas": {"r": {
        "name": "respond", "state": "INSTALLED", "mode": "TRANSPORT", "protocol": "ESP", "spi-in": "c4000001",
        "spi-out": "c4000002", "local-ts": [f"{BE}/32[tcp/http]"], "remote-ts": [f"{FE}/32[tcp]"]}}}}]}
    pkts = capture("internal", [
        frame(IP(src=FE_OUT, dst=BE) / UDP(sport=4500, dport=4500) / Raw(bytes.fromhex("c4000001") + b"\0\0\0\1" + b"x" * 60), T0 + 1.0)])
    plan, outcome = probe()
    v = judge(plan, outcome, [{"marker": plan["marker"]}], pkts, child_sas(sas), ["internal"], expectation("http", "esp"))
    assert v.observed == "esp" and v.evidence.spis == ("c4000001",)


def test_esp_beyond_the_nat_is_attributed_by_the_initiators_sa_translated(capture):
    sas = {"fe": [{"peer-be": {"local-host": FE, "remote-host": BE,
                                       "child-sas": SAS["fe"][0]["peer-be"]["child-sas"]}}]}
    pkts = capture("internal", [
        frame(IP(src=FE_OUT, dst=BE) / UDP(sport=4500, dport=4500) / Raw(bytes.fromhex("c02f0cbe") + b"\0\0\0\1" + b"x" * 60), T0 + 1.0)])
    plan, outcome = probe()
    plan["nat_aliases"] = {FE: FE_OUT}
    v = judge(plan, outcome, [{"marker": plan["marker"]}], pkts, child_sas(sas), ["internal"], expectation("http", "esp"))
    assert v.observed == "esp"
    plan["nat_aliases"] = {}  # without the NAT's mapping the same packet is nobody's
    assert judge(plan, outcome, [], pkts, child_sas(sas), ["internal"], expectation("http", "esp")).observed is Inconclusive.UNOBSERVED


def test_bulk_probe_throughput_is_measured_from_connect_to_answer(capture):
    plan, outcome = probe()
    outcome.update(bulk_bytes=2 * 1024 * 1024, bulk_started=T0 + 0.5, t_reply=T0 + 2.5)
    pkts = capture("dmz", [frame(IP(src=FE, dst=BE) / ESP(spi=0xC02F0CBE, seq=1) / Raw(b"x" * 60), T0 + 1.0)])
    v = judge(plan, outcome, [], pkts, child_sas(SAS), ["dmz"], expectation("http", "esp"))
    assert v.evidence.throughput_mbps == round(2 * 1024 * 1024 * 8 / 2.0 / 1e6, 2)
    assert "2048 KiB at" in v.reason


def test_a_delivered_flow_says_when_ike_retried():
    from lab.verdicts.classify import Evidence, reason

    fields = {f: None for f in Evidence.__dataclass_fields__}
    fields.update(delivered=True, seconds=4.2, spis=(), segments=(), ike_reasons=(
        "fe: giving up after 4 retransmits",), xfrm_errors={}, bulk_bytes=0, clear_handshake=0)
    ev = Evidence(**fields)
    text = reason("esp", ev, 10)
    assert "IKE between the two retried (fe: giving up after 4 retransmits)" in text


def test_the_evidence_sa_is_the_one_that_carried_the_flow(capture):
    """Both peers initiated: an idle twin SA covers the flow too and is listed first; the
    evidence names the SA whose SPIs the flow's packets carried."""
    idle = {"idle-1": {**SAS["fe"][0]["peer-be"]["child-sas"]["fe-be-http-2"], "name": "idle",
                       "spi-in": "c1111111", "spi-out": "c2222222", "bytes-in": "0", "bytes-out": "0"}}
    both = {"fe": [{"peer-be": {"remote-host": BE, "child-sas": {**idle, **SAS["fe"][0]["peer-be"]["child-sas"]}}}]}
    pkts = capture("dmz", [
        frame(IP(src=FE, dst=BE) / ESP(spi=0xC02F0CBE, seq=1) / Raw(b"x" * 60), T0 + 1.0),
        frame(IP(src=BE, dst=FE) / ESP(spi=0xCA17170D, seq=1) / Raw(b"y" * 60), T0 + 1.0),
    ])
    plan, outcome = probe()
    v = judge(plan, outcome, [], pkts, child_sas(both), ["dmz"], expectation("http", "esp"))
    assert v.observed == "esp" and v.evidence.sa.child == "fe-be-http"


# perpeer-port-and-all-ikev2, as captured: fe's all-traffic ESP SA to be (listed first by
# list-sas) and its HTTP-only AH SA both cover fe -> be:80; SMTP ran meanwhile over the ESP SA.
PORT_AND_ALL = {"fe": [
    {"peer-any": {"remote-host": BE, "local-host": FE, "child-sas": {"all-to-internal-3": {
        "name": "all-to-internal", "state": "INSTALLED", "mode": "TRANSPORT", "protocol": "ESP",
        "spi-in": "c217869f", "spi-out": "c96d9198", "encr-alg": "AES_GCM_16", "encr-keysize": "256",
        "local-ts": [f"{FE}/32"], "remote-ts": [f"{BE}/32"]}}}},
    {"peer-be": {"remote-host": BE, "local-host": FE, "child-sas": {"http-to-be-4": {
        "name": "http-to-be", "state": "INSTALLED", "mode": "TRANSPORT", "protocol": "AH",
        "spi-in": "cdf20c95", "spi-out": "cf5c6821", "integ-alg": "HMAC_SHA2_256_128",
        "local-ts": [f"{FE}/32[tcp]"], "remote-ts": [f"{BE}/32[tcp/http]"]}}}}]}


def _ah(src, dst, spi, tcp, t):
    return frame(IP(src=src, dst=dst) / AH(spi=spi, nh=6, payloadlen=4, seq=1, icv=b"\0" * 12) / tcp, t)


def _http_in_ah_smtp_in_esp(capture, back_in_ah=True):
    back = TCP(sport=80, dport=40000, flags="PA") / Raw(b"HTTP/1.0 200 OK\r\n\r\n")
    return capture("dmz", [
        _ah(FE, BE, 0xCF5C6821, TCP(sport=40000, dport=80, flags="S"), T0 + 0.01),
        _ah(FE, BE, 0xCF5C6821, TCP(sport=40000, dport=80, flags="PA") / Raw(b"GET /LABPROBE-p1-aa"), T0 + 0.02),
        _ah(BE, FE, 0xCDF20C95, back, T0 + 0.03) if back_in_ah else
        frame(IP(src=BE, dst=FE) / ESP(spi=0xC217869F, seq=9) / Raw(b"r" * 60), T0 + 0.03),
        # SMTP's packets on the all-traffic SA, 80 ms later: inside the HTTP probe's window
        frame(IP(src=FE, dst=BE) / ESP(spi=0xC96D9198, seq=1) / Raw(b"x" * 60), T0 + 0.1),
        frame(IP(src=BE, dst=FE) / ESP(spi=0xC217869F, seq=1) / Raw(b"y" * 60), T0 + 0.1),
    ])


def test_a_flow_seen_in_ah_names_the_ah_sa_not_a_wider_esp_sa_carrying_others(capture):
    """The AH packets show the flow's ports: their SA is named (the recount looks for AH with
    its SPIs), and ESP between the two hosts, the same way, is the other flows', not this one's."""
    pkts = _http_in_ah_smtp_in_esp(capture)
    plan, outcome = probe()
    v = judge(plan, outcome, [], pkts, child_sas(PORT_AND_ALL), ["dmz"], expectation("http", "ah"))
    assert v.observed == "ah" and v.ok
    assert v.evidence.sa.child == "http-to-be" and v.evidence.sa.protocol == "AH"
    assert v.evidence.spis == ("cdf20c95", "cf5c6821")
    assert v.evidence.ah_packets == 3 and v.evidence.esp_packets == 0


def test_esp_the_other_way_of_an_ah_flow_is_still_counted(capture):
    """Only the ways the flow crossed in AH lose their ESP: a reply sent over the ESP SA stays
    in the evidence (one policy per way, so the other way may differ)."""
    pkts = _http_in_ah_smtp_in_esp(capture, back_in_ah=False)
    plan, outcome = probe()
    v = judge(plan, outcome, [], pkts, child_sas(PORT_AND_ALL), ["dmz"], expectation("http", "ah"))
    assert v.observed == "ah" and v.evidence.sa.child == "http-to-be"
    assert v.evidence.ah_packets == 2 and v.evidence.esp_packets == 2  # be -> fe only
    assert all(s.esp == 2 for s in v.evidence.segments)


def test_the_esp_flow_beside_the_ah_one_names_the_esp_sa(capture):
    pkts = _http_in_ah_smtp_in_esp(capture)
    plan, outcome = probe(service="smtp", port=25, sport=41000)
    v = judge(plan, outcome, [], pkts, child_sas(PORT_AND_ALL), ["dmz"], expectation("smtp", "esp"))
    assert v.observed == "esp" and v.evidence.sa.child == "all-to-internal"
    assert v.evidence.spis == ("c217869f", "c96d9198")


def test_the_evidence_sa_is_the_one_that_carried_most_of_the_flow(capture):
    """An IKEv1 responder's own reply fired its trap during the install window: a second SA was
    negotiated and the flow crossed both. The first, listed first, carried its opening packet
    only; the evidence names the one that carried the rest (perpeer-respond-only-ikev1, seen)."""
    first = {"first-1": {**SAS["fe"][0]["peer-be"]["child-sas"]["fe-be-http-2"], "name": "first",
                         "state": "REKEYED", "spi-in": "c1111111", "spi-out": "c2222222"}}
    both = {"fe": [{"peer-be": {"remote-host": BE, "child-sas": {**first, **SAS["fe"][0]["peer-be"]["child-sas"]}}}]}
    pkts = capture("dmz", [
        frame(IP(src=FE, dst=BE) / ESP(spi=0xC2222222, seq=1) / Raw(b"s" * 40), T0 + 0.5),
        *[frame(IP(src=FE, dst=BE) / ESP(spi=0xC02F0CBE, seq=i) / Raw(b"x" * 60), T0 + 1.0 + i / 100) for i in range(1, 4)],
        *[frame(IP(src=BE, dst=FE) / ESP(spi=0xCA17170D, seq=i) / Raw(b"y" * 60), T0 + 1.0 + i / 100) for i in range(1, 3)],
    ])
    plan, outcome = probe()
    v = judge(plan, outcome, [], pkts, child_sas(both), ["dmz"], expectation("http", "esp"))
    assert v.observed == "esp" and v.evidence.sa.child == "fe-be-http"
    assert "c2222222" in v.evidence.spis  # both SAs' packets are still counted as the flow's
