"""Firewall (B7), NAT (B8) and tunnels (B10): loader, compile steps and the firewall judge."""

from __future__ import annotations

import pytest

from lab.compile.firewall import firewall_plan, nat_aliases
from lab.fwmatch import matches
from lab.compile.plan import build_plan
from lab.compile.strongswan import compile_host
from lab.contract import Results
from lab.errors import TopologyError
from lab.model.load import load_topology
from lab.verdicts.firewall import FirewallJudge
from lab.verdicts.wire import Packet

ROOT = "topologies/"


def _load(tmp_path, text):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return load_topology(path)


BASE = """name: t
networks: {dmz: 10.10.1.0/24, internal: 10.10.2.0/24}
hosts:
  fw: {role: firewall, interfaces: {dmz: 10.10.1.1, internal: 10.10.2.1}%s}
  fe: {role: front-end, interfaces: {dmz: 10.10.1.10}, gateway: fw}
  be: {role: back-end, interfaces: {internal: 10.10.2.20}, gateway: fw}
%s"""


def test_ruleset_compiles_to_tc_filters_in_order():
    t = load_topology(ROOT + "firewall-ipsec-ruleset.yaml")
    plan = firewall_plan(t, t.host("fw"))
    cmds = plan["commands"]
    assert cmds[:2] == ["qdisc add dev eth0 clsact", "qdisc add dev eth1 clsact"]
    # Not routed traffic (to the firewall's own subnet) passes before any rule.
    assert "filter add dev eth0 ingress protocol ip pref 100 flower dst_ip 10.10.1.0/24 action pass" in cmds
    # ESP as u32 (flower's ip_proto 50 never matched ESP in the guest), both directions.
    assert ("filter add dev eth0 ingress protocol ip pref 1002 u32 match ip src 10.10.1.10/32 "
            "match ip dst 10.10.2.20/32 match ip protocol 50 0xff action pass") in cmds
    assert ("filter add dev eth0 ingress protocol ip pref 1001 u32 match ip src 10.10.2.20/32 "
            "match ip dst 10.10.1.10/32 match ip protocol 17 0xff match ip sport 500 0xffff action pass") in cmds
    assert cmds[-1] == "filter add dev eth1 ingress protocol ip pref 60000 matchall action drop"
    assert not any("dport 80 " in c for c in cmds)  # TCP 80 is not opened: it travels in ESP
    assert plan["addresses"] == []


def test_filter_match_mirrors_tc():
    m = {"src": "10.10.1.10/32", "dst": "10.10.2.20/32", "proto": 17, "sport": None, "dport": 500}
    assert matches(m, "10.10.1.10", "10.10.2.20", 17, 500, 500)
    assert not matches(m, "10.10.1.10", "10.10.2.20", 17, 500, 4500)
    assert not matches(m, "10.10.1.11", "10.10.2.20", 17, 500, 500)
    assert matches({}, "1.2.3.4", "5.6.7.8", 50, None, None)


def test_one_way_rule_and_any(tmp_path):
    t = _load(tmp_path, BASE % (", firewall: {allow: [{from: any, to: be, protocol: icmp, both_directions: false}]}", ""))
    allow = [f for f in firewall_plan(t, t.host("fw"))["filters"] if f["kind"] == "allow"]
    assert [f["match"] for f in allow if f["dev"] == "eth0"] == [
        {"src": None, "dst": "10.10.2.20/32", "proto": 1, "sport": None, "dport": None}]


@pytest.mark.parametrize("host_extra, message", [
    (", firewall: {allow: [{from: fe, to: bee, protocol: esp}]}", "no host 'bee'"),
    (", firewall: {allow: [{from: fe, to: be, protocol: esp, port: 50}]}", "needs protocol tcp or udp"),
])
def test_firewall_errors(tmp_path, host_extra, message):
    with pytest.raises(TopologyError) as e:
        _load(tmp_path, BASE % (host_extra, ""))
    assert message in str(e.value) and "t.yaml:" in str(e.value)


def test_firewall_section_only_on_a_firewall(tmp_path):
    text = BASE.replace("role: front-end, interfaces: {dmz: 10.10.1.10}",
                        "role: front-end, interfaces: {dmz: 10.10.1.10}, firewall: {allow: []}") % ("", "")
    with pytest.raises(TopologyError, match="only a host with role firewall"):
        _load(tmp_path, text)


def test_nat_maps_inside_hosts_to_free_outside_addresses(tmp_path):
    t = _load(tmp_path, BASE % ("", "nat: {on: fw, from: dmz}\n"))
    assert t.nat.outside == "internal"
    assert [(n, str(a)) for n, a in t.nat.mapped] == [("fe", "10.10.2.254")]
    assert nat_aliases(t) == {"10.10.1.10": "10.10.2.254"}
    plan = firewall_plan(t, t.host("fw"))
    assert "filter add dev eth1 ingress protocol ip pref 10 flower dst_ip 10.10.2.254/32 action nat ingress 10.10.2.254/32 10.10.1.10 continue" in plan["commands"]
    assert "filter add dev eth1 egress protocol ip pref 10 flower src_ip 10.10.1.10/32 action nat egress 10.10.1.10/32 10.10.2.254 continue" in plan["commands"]
    assert plan["addresses"][0]["address"] == "10.10.2.254/32"  # so the firewall answers ARP for it


def test_nat_errors(tmp_path):
    with pytest.raises(TopologyError, match="fw has no interface on 'lan'"):
        _load(tmp_path, BASE % ("", "nat: {on: fw, from: lan}\n"))


def test_tunnel_rules_compile_to_tunnel_children_on_both_legs():
    t = load_topology(ROOT + "firewall-tunnels.yaml")
    fw = compile_host(t, t.host("fw"))
    leg_fe, leg_be = fw["peer-fe"], fw["peer-be"]
    assert leg_fe["local_addrs"] == ["10.10.1.1"] and leg_fe["remote_addrs"] == ["10.10.1.10"]
    assert leg_fe["children"]["leg-fe"]["mode"] == "tunnel"
    assert leg_fe["children"]["leg-fe"]["local_ts"] == ["10.10.2.20/32[tcp/80]"]
    assert leg_fe["children"]["leg-fe"]["remote_ts"] == ["10.10.1.10/32[tcp]"]
    assert leg_be["local_addrs"] == ["10.10.2.1"] and leg_be["remote_addrs"] == ["10.10.2.20"]
    assert leg_be["children"]["leg-be"]["local_ts"] == ["10.10.1.10/32[tcp]"]
    assert leg_be["local-1"]["id"] == "10.10.2.1"
    assert "peer-any" not in fw
    fe = compile_host(t, t.host("fe"))["peer-fw"]
    assert fe["remote_addrs"] == ["10.10.1.1"] and fe["children"]["to-be-via-fw"]["remote_ts"] == ["10.10.2.20/32[tcp/80]"]


def test_only_tunnel_rules_may_leave_me_out(tmp_path):
    rule = "policies:\n  p:\n    rules:\n      - {name: r, filter: {from: fe, to: be}, action: require%s}\n"
    with pytest.raises(TopologyError, match="one side must be 'me'"):
        _load(tmp_path, BASE % ("", rule % ""))
    _load(tmp_path, BASE % ("", rule % ", tunnel: fe"))
    with pytest.raises(TopologyError, match="one side must be 'me' or the tunnel endpoint"):
        _load(tmp_path, BASE % ("", rule.replace("from: fe", "from: 10.10.1.0/24") % ", tunnel: fw"))
    with pytest.raises(TopologyError, match="only a request or require rule"):
        _load(tmp_path, BASE % ("", rule.replace("require", "permit") % ", tunnel: fw"))


def _pkt(net, src, dst, kind="clear", sport=40000, dport=25, t=1000.5):
    return Packet(network=net, time=t, src=src, dst=dst, kind=kind, protocol=6, sport=sport, dport=dport,
                  spi=None, inner_esp=False, raw=b"")


def test_judge_names_the_firewall_filter_and_its_counter():
    t = load_topology(ROOT + "firewall-ipsec-ruleset.yaml")
    plan = build_plan(t, "r1", "/nowhere")
    results = Results(run_id="r1", firewall={"fw": [{"dev": "eth0", "hook": "ingress", "pref": 60000, "packets": 14,
                                                     "bytes": 900}]})
    judge = FirewallJudge(plan, results)
    probe = {"src_address": "10.10.1.10", "dst_address": "10.10.2.20", "sport": 40000, "port": 25,
             "protocol": "tcp", "t_start": 1000.0, "t_end": 1010.0}
    why = judge.where_dropped(probe, [_pkt("dmz", "10.10.1.10", "10.10.2.20")])
    assert "dropped at firewall fw" in why and "'default drop'" in why and "counted 14 packets" in why
    # It crossed: not the firewall's doing.
    crossed = [_pkt("dmz", "10.10.1.10", "10.10.2.20"), _pkt("internal", "10.10.1.10", "10.10.2.20")]
    assert judge.where_dropped(probe, crossed) is None
    # Stopped after an allow filter passed it (e.g. ESP the receiver rejected): not the firewall.
    esp = _pkt("dmz", "10.10.1.10", "10.10.2.20", kind="esp", sport=None, dport=None)
    assert judge.where_dropped(probe, [esp]) is None
