"""judge_run from a committed results.json, a charon log and small pcaps written here with scapy:
the verdicts, their evidence and their reasons, for one run of exchange-fe-be-http."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.ipsec import ESP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from lab.compile.plan import build_plan
from lab.contract import read_results
from lab.model.load import load_topology
from lab.runner import judge_run

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "judge"
FE, BE, DC, LEGACY = "10.10.1.10", "10.10.2.20", "10.10.2.30", "10.10.2.50"


def marker(i: int) -> str:
    return f"LABPROBE-p{i}-test"


def frame(t: float, ip):
    f = Ether() / ip
    f.time = t
    return f


def tcp_exchange(t: float, src: str, sport: int, dst: str, dport: int, text: str, answered=True) -> list:
    out = [frame(t, IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S")),
           frame(t + 0.01, IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="PA") / Raw(text.encode()))]
    if answered:
        out.append(frame(t + 0.02, IP(src=dst, dst=src) / TCP(sport=dport, dport=sport, flags="PA")
                         / Raw(b"LABOK " + text.split()[1].encode())))
    return out


def write_captures(outdir: Path, results: dict) -> None:
    """What each network would have carried: ESP for p1, clear for the rest; p4 unanswered."""
    t = {p["id"]: p["t_start"] for p in results["probes"]}
    esp = [frame(t["p1"] + 0.05, IP(src=FE, dst=BE) / ESP(spi=0xcbc095cf, seq=1) / Raw(b"\x8f" * 40)),
           frame(t["p1"] + 0.06, IP(src=BE, dst=FE) / ESP(spi=0xc60ab6f8, seq=1) / Raw(b"\x3c" * 40))]
    smtp = tcp_exchange(t["p2"], FE, 40002, BE, 25, f"EHLO {marker(2)}\r\nAUTH PLAIN cred-2\r\n")
    legacy = tcp_exchange(t["p3"], LEGACY, 40003, BE, 80, f"GET /{marker(3)} HTTP/1.0\r\nAuthorization: cred-3\r\n")
    lost = tcp_exchange(t["p4"], BE, 40004, FE, 80, f"GET /{marker(4)} HTTP/1.0\r\n", answered=False)[:1]
    kerberos = [frame(t["p5"], IP(src=FE, dst=DC) / UDP(sport=40005, dport=88) / Raw(f"{marker(5)} cred-5\n".encode())),
                frame(t["p5"] + 0.02, IP(src=DC, dst=FE) / UDP(sport=88, dport=40005) / Raw(f"LABOK {marker(5)}\n".encode()))]
    captures = outdir / "captures"
    captures.mkdir(parents=True)
    wrpcap(str(captures / "dmz.pcap"), esp + smtp + lost + kerberos)  # fe's side of the firewall
    wrpcap(str(captures / "internal.pcap"), esp + smtp + legacy + lost + kerberos)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("run")
    topo = load_topology(str(ROOT / "topologies" / "exchange-fe-be-http.yaml"))
    plan = build_plan(topo, "judge1", str(outdir))
    for i, p in enumerate(plan.probes, 1):  # the markers results.json speaks of
        p.marker, p.credential_on_wire = marker(i), f"cred-{i}"
    results = json.loads((DATA / "results.json").read_text())
    write_captures(outdir, results)
    (outdir / "logs").mkdir()
    shutil.copy(DATA / "charon-be.log", outdir / "logs" / "charon-be.log")
    return judge_run(topo, plan, read_results(str(DATA / "results.json")), str(outdir))


def by_id(report, ident):
    return next(v for v in report.verdicts if v.id == ident)


def test_every_expectation_gets_a_verdict(report):
    assert [v.id for v in report.verdicts] == ["fe->be:http", "fe->be:smtp", "legacy->be:http", "be->fe:http",
                                              "fe->dc:kerberos"]
    assert [v.observed for v in report.verdicts] == ["esp", "clear", "clear", "dropped", "clear"]
    assert [v.id for v in report.failed] == ["be->fe:http"] and not report.ok
    assert report.ike_packets == {"dmz": 0, "internal": 0}


def test_esp_is_backed_by_its_sa_and_nothing_readable(report):
    v = by_id(report, "fe->be:http")
    ev = v.evidence
    assert ev.flow == f"tcp {FE}:40001 -> {BE}:80" and ev.delivered and ev.received_by_server
    assert ev.spis == ("c60ab6f8", "cbc095cf") and ev.esp_packets == 4 and ev.clear_packets == 0
    assert [(s.network, s.esp) for s in ev.segments] == [("dmz", 2), ("internal", 2)]
    assert (ev.sa.host, ev.sa.child, ev.sa.algorithms) == ("fe", "fe-be-http", "AES_GCM_16-256")
    assert not ev.marker_in_clear and not ev.credential_in_clear
    assert v.reason == ("delivered in 0.20 s; 4 ESP packets (SPI c60ab6f8, cbc095cf); SA fe-be-http on fe, "
                        "ESP transport AES_GCM_16-256; marker never readable")
    assert report.sas[0].bytes_in == 293 and report.sas[0].local == FE


def test_clear_flows_show_their_marker_and_login(report):
    v = by_id(report, "fe->be:smtp")
    assert v.ok and v.evidence.marker_in_clear and v.evidence.credential_in_clear and v.evidence.sa is None
    assert v.reason == "delivered in 0.20 s; 6 packets in clear; marker readable on the wire; fake credential readable"
    assert by_id(report, "legacy->be:http").evidence.clear_packets == 3  # one network only


def test_an_unanswered_flow_is_dropped_and_says_why(report):
    v = by_id(report, "be->fe:http")
    assert not v.ok and v.expected == "clear" and v.line
    assert v.reason == ("not delivered (timed out after 10.0 s of 10); never reached the listener; "
                        "a CHILD_SA failed: be: received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built from 10.10.1.10")


def test_a_soft_sa_is_named_in_the_reason(report):
    v = by_id(report, "fe->dc:kerberos")
    assert v.evidence.soft_sa == "fe fell back to clear for 10.10.2.30 after 3.1 s of IKE silence (soft SA)"
    assert v.reason.endswith("; " + v.evidence.soft_sa)


def test_ike_outcome_and_reasons_come_from_events_and_logs(report):
    v = by_id(report, "fe->be:http")
    assert v.evidence.ike == "established"
    assert v.evidence.ike_reasons == ("be: received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built from 10.10.1.10",)
    assert by_id(report, "fe->dc:kerberos").evidence.ike == "failed"
