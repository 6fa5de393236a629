"""Expectations to a cluster (`to: mbx`): the VIP is the destination, the flow is judged against
the node that holds it, and the verdict names the node that answered.
Live: topologies/exchange-cluster-vip.yaml."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.ipsec import ESP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from lab.compile.plan import build_plan
from lab.contract import Results
from lab.errors import TopologyError
from lab.model.load import load_topology
from lab.model.topology import Result
from lab.runner import answering_node, judge_run

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "topologies" / "exchange-cluster-vip.yaml"
FE, VIP, PF_VIP = "10.10.1.10", "10.10.2.20", "10.10.2.30"


@pytest.fixture(scope="module")
def topology():
    return load_topology(DESIGN)


@pytest.fixture()
def plan(topology, tmp_path):
    return build_plan(topology, "r1", str(tmp_path))


def _probe(plan, expectation_id):
    return next(p for p in plan.probes if p["expectation"] == expectation_id)


def test_a_probe_to_a_cluster_goes_to_its_vip_and_every_node_listens(plan):
    p = _probe(plan, "fe->mbx:http")
    assert (p["dst"], p["dst_address"], p["src_address"]) == ("mbx", VIP, FE)
    assert p["cluster"] == {"name": "mbx", "vip": VIP, "nodes": ["be1", "be2"], "holder": "be1"}
    assert _probe(plan, "fe->pf:pop3")["cluster"]["holder"] == "pf2"  # the owner, not the first node
    assert _probe(plan, "fe->be2:http")["cluster"] is None
    listening = {h["name"]: {(x["protocol"], x["port"]) for x in h["listeners"]} for h in plan.hosts}
    assert {("tcp", 80), ("tcp", 143)} <= listening["be1"] and {("tcp", 80), ("tcp", 143)} <= listening["be2"]
    assert ("tcp", 110) in listening["pf1"] and ("tcp", 110) in listening["pf2"]


def test_a_tampered_flow_to_a_cluster_is_counted_on_the_vips_holder(plan):
    p = _probe(plan, "fe->mbx:http:tamper")
    holder_ns = next(h["ns"] for h in plan.hosts if h["name"] == "be1")
    assert p["tamper"]["router"] == "fw" and p["tamper"]["receiver_ns"] == holder_ns


def test_the_node_whose_listener_logged_the_marker_answered(plan):
    p = _probe(plan, "fe->mbx:http")
    heard = [{"host": "be2", "marker": p["marker"]}, {"host": "be1", "marker": "LABPROBE-other"}]
    node, text = answering_node(p, heard)
    assert node == "be2" and text == f"answered by be2 (node of mbx, VIP {VIP})"
    node, text = answering_node(p, [])  # ICMP, or never arrived: the VIP's holder
    assert node == "be1" and "held by be1" in text
    assert answering_node(_probe(plan, "fe->be2:http"), heard) == (None, None)


def _sas(host: str, spi_in: str, spi_out: str) -> dict:
    child = {"name": "respond", "state": "INSTALLED", "mode": "TRANSPORT", "protocol": "ESP",
             "spi-in": spi_in, "spi-out": spi_out, "local-ts": [f"{VIP}/32[tcp/http]"], "remote-ts": [f"{FE}/32[tcp]"]}
    return {host: [{"respond": {"local-host": VIP, "remote-host": FE, "child-sas": {"respond-1": child}}}]}


def test_the_verdict_is_judged_against_the_answering_node_and_names_it(topology, plan, tmp_path):
    """After a move, be2 holds the VIP: its listener heard the probe and its SA covers the flow."""
    p = _probe(plan, "fe->mbx:http")
    outcome = {"id": p["id"], "delivered": True, "error": None, "sport": 40000, "t_start": 1000.0,
               "t_end": 1001.0, "t_reply": 1000.9}
    results = Results.from_json({"run_id": "r1", "probes": [outcome], "received": [{"host": "be2", "marker": p["marker"]}],
                                 "sas": _sas("be2", "c0000001", "c0000002")}, "test")
    plan = replace(plan, probes=[p])
    (tmp_path / "captures").mkdir()
    wrpcap(str(tmp_path / "captures" / "internal.pcap"), [
        _frame(IP(src=FE, dst=VIP) / ESP(spi=0xC0000001, seq=1) / Raw(b"x" * 60), 1000.5),
        _frame(IP(src=VIP, dst=FE) / ESP(spi=0xC0000002, seq=1) / Raw(b"y" * 60), 1000.6)])
    topo = replace(topology, expectations=(topology.expectations[0],))
    (v,) = judge_run(topo, plan, results, str(tmp_path)).verdicts
    assert v.destination == "mbx" and v.id == "fe->mbx:http"
    assert v.observed is Result.ESP and v.expected_ike == v.ike == "established" and v.ok  # IKE with the VIP
    assert v.observed_text == "esp, IKE established"
    assert v.evidence.sa is not None and v.evidence.sa.host == "be2"
    assert v.evidence.esp_packets == 2 and v.evidence.received_by_server
    assert f"answered by be2 (node of mbx, VIP {VIP})" in v.reason


def _frame(ip, t):
    f = Ether() / ip
    f.time = t
    return f


def test_a_real_client_cannot_target_a_cluster(tmp_path):
    text = DESIGN.read_text().replace("  - {from: fe, to: mbx, service: imap, result: clear}",
                                      "  - {from: fe, to: mbx, service: imap, result: clear, client: real}")
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError) as e:
        load_topology(path)
    assert str(e.value).splitlines()[0].endswith(
        "expect[1].client: mbx is a cluster: its nodes answer with the lab's listener, not real servers; "
        "remove client: real")
