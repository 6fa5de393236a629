"""The compiler: Windows rules -> strongSwan connections, and the plan the executor runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.compile.plan import build_plan, payload
from lab.compile.strongswan import compile_host, priority, traffic_selectors
from lab.selectors import covers
from lab.model.load import load_topology

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "topologies" / "exchange-fe-be-http.yaml"


@pytest.fixture(scope="module")
def topo():
    return load_topology(DEFAULT)


def test_require_rule_is_a_trapped_transport_child(topo):
    conns = compile_host(topo, topo.host("fe"))
    # Windows keeps the default response rule active in a custom policy unless it is turned off.
    assert list(conns) == ["peer-be", "peer-any"]  # one IKE connection per peer
    conn = conns["peer-be"]
    assert conn["remote_addrs"] == ["10.10.2.20"]
    assert conn["local_addrs"] == ["10.10.1.10"]
    assert conn["mobike"] == "no"
    child = conn["children"]["fe-be-http"]
    assert child["mode"] == "transport"
    assert child["start_action"] == "trap"
    assert child["local_ts"] == ["10.10.1.10/32[tcp]"]  # any source port
    assert child["remote_ts"] == ["10.10.2.20/32[tcp/80]"]
    assert "esp_proposals" in child and "ah_proposals" not in child


def test_respond_only_answers_any_peer_and_never_initiates(topo):
    conns = compile_host(topo, topo.host("be"))
    assert list(conns) == ["peer-any"]
    child = conns["peer-any"]["children"]["respond"]
    assert conns["peer-any"]["remote_addrs"] == ["%any"]
    assert child["start_action"] == "none"
    assert child["local_ts"] == child["remote_ts"] == ["dynamic"]
    assert child["esp_proposals"] and child["ah_proposals"]  # accepts what the initiator asks


def test_host_without_policy_loads_nothing(topo):
    assert compile_host(topo, topo.host("dc")) == {}


def test_permit_and_block_become_shunts_no_peer_can_select(tmp_path):
    text = DEFAULT.read_text().replace(
        "        action: require\n        security: esp\n",
        "        action: require\n        security: esp\n"
        "      - name: icmp-ok\n        filter: {from: me, to: any, protocol: icmp}\n        action: permit\n"
        "      - name: no-ldap\n        filter: {from: me, to: dc, protocol: tcp, port: 389}\n        action: block\n")
    path = tmp_path / "t.yaml"
    path.write_text(text)
    topo = load_topology(path)
    conns = compile_host(topo, topo.host("fe"))
    shunts = conns["shunts"]
    assert shunts["remote_addrs"] == ["127.0.0.1"]
    assert shunts["children"]["icmp-ok"]["mode"] == "pass"
    assert shunts["children"]["no-ldap"]["mode"] == "drop"
    assert shunts["children"]["no-ldap"]["remote_ts"] == ["10.10.2.30/32[tcp/389]"]
    # Windows weight: the port-specific block beats the any-address permit.
    assert int(shunts["children"]["no-ldap"]["priority"]) < int(shunts["children"]["icmp-ok"]["priority"])


def test_more_specific_rule_wins_whatever_its_action(topo):
    fe = topo.host("fe")
    rule = topo.policy("fe-to-be-http").rules[0]
    broad = type(rule)(name="all", filter=type(rule.filter)(rule.filter.source, rule.filter.destination,
                                                            None, None, None), action=rule.action)
    assert priority(rule, fe) < priority(broad, fe)


def test_traffic_selector_syntax():
    import ipaddress
    nets = [ipaddress.ip_network("10.0.0.0/24")]
    assert traffic_selectors(nets, None, None) == ["10.0.0.0/24"]
    assert traffic_selectors(nets, "udp", None) == ["10.0.0.0/24[udp]"]
    assert traffic_selectors(nets, "tcp", 443) == ["10.0.0.0/24[tcp/443]"]


@pytest.mark.parametrize("ts,address,proto,port,expected", [
    ("10.10.2.20/32[tcp/http]", "10.10.2.20", "tcp", 80, True),
    ("10.10.2.20/32[tcp/http]", "10.10.2.20", "tcp", 25, False),
    ("10.10.2.20/32[tcp/80]", "10.10.2.20", "tcp", 80, True),
    ("10.10.1.10/32[tcp]", "10.10.1.10", "tcp", 40000, True),
    ("10.10.1.10/32[tcp]", "10.10.1.10", "udp", 40000, False),
    ("10.10.1.0/24", "10.10.1.99", "udp", 88, True),
    ("10.10.1.0/24", "10.10.2.1", "udp", 88, False),
    ("10.10.2.20/32[tcp/1000-2000]", "10.10.2.20", "tcp", 1500, True),
])
def test_covers_reads_selectors_as_charon_lists_them(ts, address, proto, port, expected):
    assert covers(ts, address, proto, port) is expected


def test_plan_is_plain_json_without_secrets(topo):
    plan = build_plan(topo, "abc123", "/var/tmp/x/out")
    text = json.dumps(plan.to_json())
    # The key travels only in the separate secrets file: no shared-secret entry in the plan.
    assert '"data"' not in text and "secret" not in text.lower()
    hosts = {h["name"]: h for h in plan.hosts}
    assert hosts["fw"]["forward"] is True and hosts["fe"]["forward"] is False
    assert hosts["fe"]["ns"] == "lab-abc123-h1"  # a short internal id, whatever the host's name
    assert hosts["fe"]["routes"] == [{"dst": "default", "via": "10.10.1.1"}]
    assert hosts["fe"]["charon"]["conns"] and hosts["dc"]["charon"] is None
    # Listeners: declared services plus those an expectation names (be->fe http).
    assert {"protocol": "tcp", "port": 80, "service": "http", "groups": []} in hosts["fe"]["listeners"]
    assert {(s["protocol"], s["port"]) for s in hosts["be"]["listeners"]} >= {("tcp", 80), ("tcp", 25)}


def test_probes_carry_unique_markers_and_leave_from_the_right_address(topo):
    plan = build_plan(topo, "abc123", "/x")
    probes = {p["expectation"]: p for p in plan.probes}
    http = probes["fe->be:http"]
    assert (http["src_address"], http["dst_address"], http["protocol"], http["port"]) == \
        ("10.10.1.10", "10.10.2.20", "tcp", 80)
    assert len({p["marker"] for p in plan.probes}) == len(plan.probes)
    assert http["marker"] in http["payload"]
    assert http["credential_on_wire"] in http["payload"]


@pytest.mark.parametrize("service,first", [("http", "GET /"), ("pop3", "USER "), ("imap", "a1 LOGIN "),
                                           ("smtp", "EHLO "), ("ldap", "LABPROBE")])
def test_payload_looks_like_the_service_and_carries_a_fake_login(service, first):
    text, wire = payload(service, "LABPROBE-p1-x", "fake-123")
    assert text.startswith(first)
    assert wire in text


def test_bulk_expectations_carry_bytes_and_a_longer_timeout(tmp_path):
    topo = load_topology(ROOT / "topologies" / "ipsec-cost.yaml")
    probes = build_plan(topo, "abc123", "/x")["probes"]
    assert all(p["bulk"] == 2048 * 1024 for p in probes)
    assert all(p["timeout"] > 10 for p in probes)


def test_bulk_needs_a_tcp_service(tmp_path):
    from lab.errors import TopologyError
    bad = tmp_path / "bulk.yaml"
    bad.write_text(DEFAULT.read_text().replace("{from: fe, to: dc, service: kerberos, result: clear}",
                                               "{from: fe, to: dc, service: kerberos, bulk: 64, result: clear}"))
    with pytest.raises(TopologyError) as err:
        load_topology(bad)
    assert "expect[4].bulk: bulk needs a tcp service" in str(err.value)
