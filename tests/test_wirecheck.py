"""The independent recount (conformance/wirecheck.py): tcpdump filter expressions run on pcaps
written here with scapy, so a recount that cannot fail, or fails for the wrong reason, shows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.ipsec import AH, ESP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

WIRECHECK = Path(__file__).resolve().parent.parent / "conformance" / "wirecheck.py"


def _load():
    # By path: the conformance folder is no package, and tests/ has a conftest of its own.
    spec = importlib.util.spec_from_file_location("wirecheck", WIRECHECK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["wirecheck"] = module
    spec.loader.exec_module(module)
    return module


wc = _load()
FE, BE, RTR_A, RTR_B = "10.10.1.10", "10.10.2.20", "10.10.1.1", "10.10.2.1"
HTTP = wc.parse_flow(f"tcp {FE}:40000 -> {BE}:80")
AH_SPIS = {"cdf20c95", "cf5c6821"}
ESP_SPIS = {"c217869f", "c96d9198"}  # the all-traffic SA beside the HTTP-only AH SA


def ah(spi: int, nh: int = 6) -> AH:
    return AH(spi=spi, nh=nh, payloadlen=4, seq=1, icv=b"\0" * 12)


@pytest.fixture
def pcap(tmp_path):
    def write(*ips):
        path = tmp_path / f"net{len(list(tmp_path.iterdir()))}.pcap"
        wrpcap(str(path), [Ether() / ip for ip in ips])
        return [path]
    return write


def http_in_ah_smtp_in_esp(pcap):
    return pcap(
        IP(src=FE, dst=BE) / ah(0xCF5C6821) / TCP(sport=40000, dport=80, flags="PA") / Raw(b"GET /"),
        IP(src=BE, dst=FE) / ah(0xCDF20C95) / TCP(sport=80, dport=40000, flags="PA") / Raw(b"200 OK"),
        IP(src=FE, dst=BE) / ESP(spi=0xC96D9198, seq=1) / Raw(b"x" * 60),  # SMTP, on the ESP SA
        IP(src=BE, dst=FE) / ESP(spi=0xC217869F, seq=1) / Raw(b"y" * 60),
    )


def test_ah_agrees_when_the_named_sa_carried_the_flow(pcap):
    assert wc.disagreement("ah", HTTP, set(), AH_SPIS, http_in_ah_smtp_in_esp(pcap)) is None


def test_ah_disagrees_when_the_evidence_names_the_wider_esp_sa(pcap):
    """The failure seen on perpeer-port-and-all-ikev2: the verdict was ah, the SA named was the
    ESP SA that carried the other flows."""
    why = wc.disagreement("ah", HTTP, set(), ESP_SPIS, http_in_ah_smtp_in_esp(pcap))
    assert why and "no packet matches" in why


def test_ah_disagrees_when_the_named_sa_carried_only_another_flow(pcap):
    """AH with the right SPIs is not enough: the packets must be this flow's (its ports)."""
    other = pcap(IP(src=FE, dst=BE) / ah(0xCF5C6821) / TCP(sport=40001, dport=80, flags="PA") / Raw(b"GET /"))
    assert wc.disagreement("ah", HTTP, set(), AH_SPIS, other)
    reply_only = pcap(IP(src=BE, dst=FE) / ah(0xCDF20C95) / TCP(sport=80, dport=40000, flags="A"))
    assert wc.disagreement("ah", HTTP, set(), AH_SPIS, reply_only) is None


def test_ah_reads_the_ports_behind_a_longer_ah_header(pcap):
    """AH's length field decides where the flow's header starts (a 16-byte ICV here)."""
    longer = AH(spi=0xCF5C6821, nh=6, payloadlen=5, seq=1, icv=b"\0" * 16)
    found = pcap(IP(src=FE, dst=BE) / longer / TCP(sport=40000, dport=80, flags="PA") / Raw(b"GET /"))
    assert wc.disagreement("ah", HTTP, set(), AH_SPIS, found) is None


def test_tunnel_mode_ah_matches_the_inner_packet(pcap):
    inner = IP(src=FE, dst=BE) / TCP(sport=40000, dport=80, flags="PA") / Raw(b"GET /")
    caps = pcap(IP(src=RTR_A, dst=RTR_B) / ah(0xCF5C6821, nh=4) / inner)
    assert wc.disagreement("ah", HTTP, {(RTR_A, RTR_B)}, AH_SPIS, caps) is None
    other = IP(src=FE, dst=BE) / TCP(sport=40000, dport=25, flags="PA") / Raw(b"EHLO")
    assert wc.disagreement("ah", HTTP, {(RTR_A, RTR_B)}, AH_SPIS,
                           pcap(IP(src=RTR_A, dst=RTR_B) / ah(0xCF5C6821, nh=4) / other))


def test_icmp_in_ah_is_matched_by_its_echo_id(pcap):
    ping = wc.parse_flow(f"icmp {FE}:7 -> {BE}:0")
    echo = IP(src=FE, dst=BE) / ah(0xCF5C6821, nh=1) / ICMP(type=8, id=7) / Raw(b"p" * 32)
    assert wc.disagreement("ah", ping, set(), AH_SPIS, pcap(echo)) is None
    assert wc.disagreement("ah", wc.parse_flow(f"icmp {FE}:8 -> {BE}:0"), set(), AH_SPIS, pcap(echo))


def test_esp_agrees_by_the_sa_spis_and_a_data_leak_disagrees(pcap):
    caps = http_in_ah_smtp_in_esp(pcap)
    smtp = wc.parse_flow(f"tcp {FE}:41000 -> {BE}:25")
    assert wc.disagreement("esp", smtp, set(), ESP_SPIS, caps) is None
    assert wc.disagreement("esp", smtp, set(), {"c0000001"}, caps)
    leak = pcap(IP(src=FE, dst=BE) / ESP(spi=0xC96D9198, seq=1) / Raw(b"x" * 60),
                IP(src=FE, dst=BE) / TCP(sport=41000, dport=25, flags="PA") / Raw(b"EHLO"))
    assert "carried data in clear" in wc.disagreement("esp", smtp, set(), ESP_SPIS, leak)


def test_the_recount_reads_the_captures_the_report_names_not_leftovers(tmp_path):
    """A matrix run writes wave-N/captures/; a pcap left at the top by an earlier run is not its."""
    from types import SimpleNamespace

    for rel in ("captures/lan.pcap", "wave-1/captures/lan.pcap", "wave-2/captures/dmz.pcap"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    waves = SimpleNamespace(artifacts={"wave-1/captures/lan.pcap": "wave-1/captures/lan.pcap",
                                       "wave-2/captures/dmz.pcap": "wave-2/captures/dmz.pcap",
                                       "wave-1/executor.json": "wave-1/executor.json"})
    assert wc.report_captures(waves, tmp_path) == [tmp_path / "wave-1/captures/lan.pcap",
                                                   tmp_path / "wave-2/captures/dmz.pcap"]
    nothing = SimpleNamespace(artifacts={}, verdicts=[], sas=[])
    assert wc.check_report(nothing, tmp_path) == [f"no capture named by the report in {tmp_path}"]
