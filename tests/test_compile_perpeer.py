"""Rules between one pair of hosts: one IKE connection per peer, one child per rule (issue 10).

Windows negotiates one Main Mode per pair of computers and one Quick Mode per filter. charon
answers a peer from the one connection it selected for it, so every rule a peer may ask for
must be a child of that connection. The live proofs are the `topologies/perpeer-*.yaml`
designs; these tests pin the compile rules behind them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from lab.compile.strongswan import compile_host, runtime_hints
from lab.contract import Results
from lab.guest.softsa import covering
from lab.model.load import load_topology
from lab.runner import _soft_sa

TOPOLOGIES = Path(__file__).resolve().parent.parent / "topologies"


def _load(name: str):
    return load_topology(TOPOLOGIES / f"{name}.yaml")


def _conns(topo, host: str) -> dict:
    return compile_host(topo, topo.host(host))


def test_mirrored_rules_share_one_connection_per_peer_on_both_sides():
    topo = _load("perpeer-mail-ikev2")
    fe, be = _conns(topo, "fe"), _conns(topo, "be")
    assert list(fe) == ["peer-be", "peer-any"] and list(be) == ["peer-fe", "peer-any"]
    assert list(fe["peer-be"]["children"]) == ["pop3-to-be", "imap-to-be", "respond"]
    assert list(be["peer-fe"]["children"]) == ["pop3-from-fe", "imap-from-fe", "respond"]
    # the back-end picks peer-fe for the front-end's IKE_SA: both of its rules are found there
    assert be["peer-fe"]["remote_addrs"] == ["10.10.1.10"] and be["peer-fe"]["remote-1"]["id"] == "10.10.1.10"
    children = [*fe["peer-be"]["children"].values(), *be["peer-fe"]["children"].values()]
    assert [c["start_action"] for c in children] == ["trap", "trap", "none"] * 2


def test_kernel_priorities_stay_per_rule_unique_and_by_specificity():
    topo = _load("perpeer-port-and-all-ikev2")
    fe = _conns(topo, "fe")
    http = int(fe["peer-be"]["children"]["http-to-be"]["priority"])
    broad = int(fe["peer-any"]["children"]["all-to-internal"]["priority"])
    assert http < broad  # the port rule wins in the kernel, as Windows' weight says
    mail = _conns(_load("perpeer-mail-ikev2"), "fe")["peer-be"]["children"]
    assert mail["pop3-to-be"]["priority"] != mail["imap-to-be"]["priority"]


def test_each_child_keeps_its_rules_protocol_and_algorithms():
    children = _conns(_load("perpeer-ah-esp-ikev2"), "be")["peer-fe"]["children"]
    pop3 = children["pop3-from-fe"]
    assert pop3["ah_proposals"] == ["sha1"] and "esp_proposals" not in pop3
    assert children["imap-from-fe"]["esp_proposals"] == ["aes256gcm16"]
    assert children["http-from-fe"]["esp_proposals"] == ["aes128-sha256"]


def test_subnet_rule_traps_in_peer_any_and_answers_in_the_named_peers_connection():
    topo = _load("perpeer-port-and-all-ikev2")
    fe, be = _conns(topo, "fe"), _conns(topo, "be")
    trap = fe["peer-any"]["children"]["all-to-internal"]
    copy = fe["peer-be"]["children"]["all-to-internal"]  # be is inside 10.10.2.0/24
    assert trap["start_action"] == "trap" and copy["start_action"] == "none"
    assert "close_action" not in copy and "dpd_action" not in copy
    # the same kernel priority and reqid: an SA answered in peer-be matches the trap's template
    assert copy["priority"] == trap["priority"] and copy["reqid"] == trap["reqid"] == trap["priority"]
    assert copy["local_ts"] == trap["local_ts"] and copy["remote_ts"] == trap["remote_ts"] == ["10.10.2.0/24"]
    # the back-end answers the front-end's all-traffic offer from peer-fe
    assert list(be["peer-fe"]["children"]) == ["http-from-fe", "all-to-dmz", "respond"]
    # peer-any: the subnet rule's trap and the default response rule, in one connection
    assert list(fe["peer-any"]["children"]) == ["all-to-internal", "respond"]
    assert fe["peer-any"]["remote_addrs"] == ["%any"]


def test_subnet_rule_is_not_copied_to_a_peer_outside_it(tmp_path):
    text = (TOPOLOGIES / "perpeer-port-and-all-ikev2.yaml").read_text().replace(
        "filter: {from: me, to: 10.10.2.0/24}", "filter: {from: me, to: 10.10.3.0/24}")
    path = tmp_path / "t.yaml"
    path.write_text(text)
    topo = load_topology(path)
    assert list(_conns(topo, "fe")["peer-be"]["children"]) == ["http-to-be", "respond"]


def test_respond_only_host_has_one_connection_for_any_peer():
    topo = _load("perpeer-respond-only-ikev1")
    assert list(_conns(topo, "be1")) == ["peer-any"]
    be2 = _conns(topo, "be2")
    # a partly mirrored host: the default response child answers what its filter does not cover
    assert list(be2["peer-fe"]["children"]) == ["pop3-from-fe", "respond"]
    assert be2["peer-fe"]["children"]["respond"] == be2["peer-any"]["children"]["respond"]


def test_without_default_response_a_peer_connection_answers_only_its_rules():
    topo = _load("mismatched-filters-ikev1")
    be = _conns(topo, "be")
    assert list(be) == ["peer-fe"] and list(be["peer-fe"]["children"]) == ["http-from-fe"]


def test_ikev1_connection_per_peer_is_main_mode_with_a_quick_mode_per_rule():
    topo = _load("perpeer-require-request-ikev1")
    fe = _conns(topo, "fe")
    assert list(fe) == ["peer-be", "peer-legacy", "peer-any"]
    conn = fe["peer-be"]
    assert conn["version"] == "1" and conn["aggressive"] == "no"
    assert conn["proposals"] == ["3des-sha1-modp1024"]
    assert list(conn["children"]) == ["pop3-to-be", "imap-to-be", "respond"]


def test_fallback_hints_per_connection_list_only_request_rules():
    topo = _load("perpeer-require-request-ikev1")
    hints = runtime_hints(topo, topo.host("fe"))
    conns = _conns(topo, "fe")
    assert set(hints["fallback"]) == {"peer-be", "peer-legacy"}
    legacy = hints["fallback"]["peer-legacy"]
    assert legacy["seconds"] == 3.0
    assert [c["rule"] for c in legacy["children"]] == ["http-to-legacy"]  # smtp-to-legacy is Require
    http = legacy["children"][0]
    assert http["priority"] == int(conns["peer-legacy"]["children"]["http-to-legacy"]["priority"]) - 1
    assert http["remote_suffix"] == "[tcp/80]" and http["remote_prefixes"] == ["10.10.2.40/32"]
    # request rules have inbound passthrough: both, found by their unique priorities
    assert hints["inpass"] == sorted(int(conns[c]["children"][r]["priority"]) for c, r in
                                     (("peer-be", "imap-to-be"), ("peer-legacy", "http-to-legacy")))


def test_soft_sa_agent_falls_back_only_for_request_rules_covering_the_peer():
    children = [{"rule": "all", "remote_prefixes": ["10.10.2.0/24"]},
                {"rule": "web", "remote_prefixes": ["10.10.3.7/32"]}]
    assert [c["rule"] for c in covering(children, "10.10.2.40")] == ["all"]
    assert covering(children, "10.10.9.9") == []


def test_verdict_names_a_soft_sa_only_for_flows_it_covers():
    soft = {"peer": "10.10.2.40", "after": 3.1, "remote_ts": ["10.10.2.40/32[tcp/80]"]}
    results = Results(run_id="t", soft_sas={"fe": [soft]})
    pair = (("fe", "10.10.1.10"), ("legacy", "10.10.2.40"))
    http = NS(protocol="tcp", port=80)
    smtp = NS(protocol="tcp", port=25)
    assert "fell back to clear for 10.10.2.40" in _soft_sa(results, pair, http, NS(sport=40000))
    assert _soft_sa(results, pair, smtp, NS(sport=40001)) is None  # Require towards the same peer
    # legacy -> fe: from fe's side the peer's port is the client's, which tcp/80 does not cover
    assert _soft_sa(results, pair[::-1], http, NS(sport=40002)) is None
    # a real client that could not report its port: address and protocol decide
    soft = {"peer": "10.10.1.10", "after": 3.0, "remote_ts": ["10.10.1.10/32[tcp/80]"]}
    results.soft_sas = {"legacy": [soft]}
    assert _soft_sa(results, pair, http, NS(sport=None)) is not None


CLUSTER = """\
name: t
networks: {dmz: 10.10.1.0/24, internal: 10.10.2.0/24}
hosts:
  fw: {role: firewall, interfaces: {dmz: 10.10.1.1, internal: 10.10.2.1}}
  fe: {role: front-end, interfaces: {dmz: 10.10.1.10}, gateway: fw, policy: fe-p}
  be1: {role: back-end, interfaces: {internal: 10.10.2.21}, gateway: fw, cluster: mbx}
  be2: {role: back-end, interfaces: {internal: 10.10.2.22}, gateway: fw, cluster: mbx}
  dc: {role: domain-controller, interfaces: {internal: 10.10.2.30}, gateway: fw}
clusters:
  mbx: {vip: 10.10.2.20, owner: be1, policy: mbx-p, services: [pop3, imap]}
policies:
  fe-p:
    rules:
      - {name: pop3-to-vip, filter: {from: me, to: mbx, protocol: tcp, port: 110}, action: require}
      - {name: imap-to-vip, filter: {from: me, to: 10.10.2.20, protocol: tcp, port: 143}, action: require}
      - {name: ldap-to-dc, filter: {from: me, to: 10.10.2.30, protocol: tcp, port: 389}, action: require}
      - {name: respond, filter: {from: me, to: dc, protocol: tcp, port: 88}, action: require}
  mbx-p:
    rules:
      - {name: pop3-from-fe, filter: {from: me, to: fe, protocol: tcp, src_port: 110}, action: require}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    path = tmp_path_factory.mktemp("c") / "t.yaml"
    path.write_text(CLUSTER)
    return load_topology(path)


def test_cluster_vip_is_one_peer_however_the_filter_names_it(cluster):
    fe = _conns(cluster, "fe")
    assert list(fe["peer-mbx"]["children"])[:2] == ["pop3-to-vip", "imap-to-vip"]
    assert fe["peer-mbx"]["remote_addrs"] == ["10.10.2.20"]
    # an address that belongs to a host is that host
    assert list(fe["peer-dc"]["children"])[:2] == ["ldap-to-dc", "respond"]


def test_default_response_child_yields_its_name_to_a_rule(cluster):
    children = _conns(cluster, "fe")["peer-dc"]["children"]
    assert children["respond"]["start_action"] == "trap"  # the rule called `respond`
    assert children["respond-default"]["local_ts"] == ["dynamic"]


def test_cluster_node_answers_as_the_vip_it_was_contacted_on(cluster):
    node = _conns(cluster, "be1")["peer-fe"]
    assert "id" not in node["local-1"]  # the VIP the front-end expects, not the node's address
    assert node["local_addrs"] == ["10.10.2.21", "10.10.2.20"]


def test_tunnel_and_transport_rules_to_one_host_share_its_connection(tmp_path):
    text = (TOPOLOGIES / "firewall-tunnels.yaml").read_text().replace(
        "         security: esp, tunnel: fw}\n  fw-tunnels:",
        "         security: esp, tunnel: fw}\n"
        "      - {name: ike-to-fw, filter: {from: me, to: fw, protocol: tcp, port: 22}, action: require}\n"
        "  fw-tunnels:")
    path = tmp_path / "t.yaml"
    path.write_text(text)
    topo = load_topology(path)
    conn = _conns(topo, "fe")["peer-fw"]
    assert conn["remote_addrs"] == ["10.10.1.1"] and conn["local_addrs"] == ["10.10.1.10"]
    assert conn["children"]["to-be-via-fw"]["mode"] == "tunnel"
    assert conn["children"]["ike-to-fw"]["mode"] == "transport"
