"""lab predict: the static model of Windows semantics agrees with every written expectation of
every shipped topology (each of which held on the live lab), and reasons the way
docs/semantics.md says."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

from lab.model.load import load_topology
from lab.model.services import parse_service
from lab.predict import Flow, lint, predict_flow, predict_matrix

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(glob.glob(str(ROOT / "topologies" / "*.yaml")))


@pytest.mark.parametrize("path", SHIPPED, ids=[Path(p).stem for p in SHIPPED])
def test_prediction_agrees_with_every_written_expectation(path):
    topology = load_topology(path)
    assert [c.line() for c in lint(topology)] == []


def _predict(name: str, src: str, dst: str, service: str, **kw):
    topology = load_topology(ROOT / "topologies" / f"{name}.yaml")
    return predict_flow(topology, Flow(src, dst, parse_service(service), **kw))


def test_require_to_respond_only_names_both_sides():
    p = _predict("exchange-fe-be-http", "fe", "be", "http")
    assert (p.result, p.ike) == ("esp", "established")
    assert p.source_side == "fe: rule fe-be-http (require esp)"
    assert p.destination_side == "be: default response rule (Respond Only) answers"


def test_request_falls_back_only_on_silence():
    p = _predict("windows-default-policies", "a-none", "b-req", "http")
    assert p.result == "clear" and "falls back to clear after 3 s" in p.reason
    p = _predict("windows-default-policies", "a-none", "b-sec", "http")
    assert (p.result, p.ike) == ("dropped", "failed")


def test_exemption_decides_before_any_rule():
    p = _predict("kerberos-exemption-2000", "fe", "dc", "kerberos")
    assert p.result == "clear" and "exemption: Kerberos (NoDefaultExempt 0)" in p.source_side
    assert _predict("kerberos-exemption-2003", "fe", "dc", "kerberos").result == "esp"


def test_firewall_names_the_missing_rule():
    p = _predict("firewall-missing-esp", "fe", "be", "http")
    assert (p.result, p.ike) == ("dropped", "established")
    assert "no allow rule for ESP 10.10.1.10 -> 10.10.2.20" in p.reason
    p = _predict("firewall-missing-ike", "fe", "be", "http")
    assert (p.result, p.ike) == ("dropped", "failed") and "udp" in p.reason


def test_ah_cannot_cross_nat_but_esp_can():
    assert _predict("nat-ikev2", "fe", "be", "pop3").result == "dropped"
    p = _predict("nat-ikev2", "fe", "be", "imap")
    assert p.result == "esp" and "UDP 4500" in p.reason


def test_revoked_and_missing_certificates_fail_ike():
    assert "revoked" in _predict("ipsec-restricted-publishing", "stolen", "edge", "https").reason
    assert "no machine certificate" in _predict("ipsec-restricted-publishing", "nocert", "edge", "https").reason


def test_narrowed_sa_blacks_out_the_rest():
    p = _predict("mismatched-filters-ikev1", "fe", "be", "smtp")
    assert p.result == "dropped" and "narrowed" in p.reason


def test_disjoint_proposals_fail():
    p = _predict("mismatched-proposals", "fe", "be", "http")
    assert (p.result, p.ike) == ("dropped", "failed") and "no acceptable proposal" in p.reason


def test_cluster_is_reached_at_its_vip():
    p = _predict("exchange-cluster-failover", "fe", "mbx", "http")
    assert p.result == "esp" and p.destination_side.startswith("be1:")


def test_no_route_is_dropped():
    p = _predict("exchange-ssl-fe-real", "legacy", "fe", "https")
    assert p.result == "dropped" and "no route from legacy" in p.reason


def test_matrix_covers_every_pair_and_offered_service():
    topology = load_topology(ROOT / "topologies" / "exchange-fe-be-http.yaml")
    ids = {p.id for p in predict_matrix(topology)}
    assert {"fe->be:http", "fe->be:imap", "legacy->dc:rpc", "be->fe:http"} <= ids
    assert not any(i.split("->")[0] == i.split("->")[1].split(":")[0] for i in ids)


def test_matrix_runs_in_waves_written_first_then_few_negotiations_each():
    from lab.predict.live import matrix_topology, waves

    topology = load_topology(ROOT / "topologies" / "windows-default-policies.yaml")
    swapped, predictions, written = matrix_topology(topology)
    groups = waves(swapped.expectations, predictions, written, size=4)
    assert {e.id for e in groups[0]} == set(written)
    assert sorted(e.id for g in groups for e in g) == sorted(e.id for e in swapped.expectations)
    for g in groups[1:]:
        assert sum(predictions[e.id].ike is not None for e in g) <= 4
    assert all(e.result.value == predictions[e.id].result for g in groups for e in g)


def test_a_rule_that_only_overlaps_the_offer_leaves_it_to_the_default_response_rule():
    """be's only rule (SMTP it sends, GCM only) overlaps fe's HTTP offer without matching it:
    the default response rule answers and takes 3DES (held live: default-response-beside-other-rule)."""
    p = _predict("default-response-beside-other-rule", "fe", "be", "http")
    assert (p.result, p.ike) == ("esp", "established")
    assert p.destination_side == "be: default response rule (Respond Only) answers"
    p = _predict("mismatched-proposals", "fe", "be", "http")
    assert (p.result, p.ike) == ("dropped", "failed") and "no acceptable proposal" in p.reason


def test_matrix_run_probes_a_cluster_at_its_vip():
    """The flows a cluster design is about go to the VIP: a matrix run must probe them too
    (exchange-cluster-failover's only protected flow is fe -> mbx http)."""
    from lab.predict.live import matrix_topology

    swapped, predictions, _ = matrix_topology(load_topology(ROOT / "topologies" / "exchange-cluster-failover.yaml"))
    ids = [e.id for e in swapped.expectations]
    assert {"fe->mbx:http", "fe->mbx:imap", "fw->mbx:http"} <= set(ids)
    assert not any(i.startswith(("be1->mbx", "be2->mbx")) for i in ids)  # a node never probes its own VIP
    assert predictions["fe->mbx:http"].result == "esp"
