"""Compile rules for Windows semantics: proposals, exemptions, inbound passthrough, soft SA hints."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.compile.exemptions import EXEMPTION_PRIORITY, exemption_selectors
from lab.compile.proposals import child_lifetimes, child_proposals, ike_proposals
from lab.compile.strongswan import compile_host, priority, runtime_hints
from lab.model.load import load_topology
from lab.model.topology import Action, Rule, Security, SecurityMethod

TOPOLOGIES = Path(__file__).resolve().parent.parent / "topologies"


@pytest.fixture(scope="module")
def matrix():
    return load_topology(TOPOLOGIES / "windows-default-policies.yaml")


def rule_with(*methods, pfs=None):
    from lab.model.topology import Endpoint, Filter
    me = Endpoint("me", "me", ())
    return Rule("r", Filter(me, me, None, None, None), Action.REQUIRE, tuple(methods), pfs_group=pfs)


def test_security_methods_become_ordered_proposals_with_pfs():
    r = rule_with(SecurityMethod(Security.ESP, "3des", "sha1"), SecurityMethod(Security.AH, None, "md5"),
                  SecurityMethod(Security.ESP, "aes256gcm16"), pfs=2)
    assert child_proposals(r) == {"esp_proposals": ["3des-sha1-modp1024", "aes256gcm16-modp1024"],
                                  "ah_proposals": ["md5-modp1024"]}


def test_default_method_is_modern_esp():
    assert child_proposals(rule_with()) == {"esp_proposals": ["aes256gcm16", "aes256-sha256"]}


def test_lifetimes_are_hard_limits_with_rekeying_before():
    r = rule_with(SecurityMethod(Security.ESP, "3des", "sha1", lifetime_seconds=3600, lifetime_kilobytes=100000))
    assert child_lifetimes(r) == {"life_time": "3600s", "rekey_time": "3240s",
                                  "life_bytes": str(100000 * 1024), "rekey_bytes": str(int(100000 * 1024 * 0.9))}


def test_ikev1_main_mode_with_windows_methods():
    topo = load_topology(TOPOLOGIES / "windows-2003-ikev1.yaml")
    assert ike_proposals(topo) == ["3des-sha1-modp1024"]
    conn = compile_host(topo, topo.host("fe"))["peer-be"]
    assert conn["version"] == "1" and conn["aggressive"] == "no" and conn["reauth_time"] == "480m"
    child = conn["children"]["fe-be-http"]
    assert child["esp_proposals"] == ["3des-sha1-modp1024", "des-md5-modp1024"]
    assert child["life_time"] == "3600s"


def test_respond_only_accepts_windows_methods_with_and_without_pfs(matrix):
    child = compile_host(matrix, matrix.host("b-resp"))["peer-any"]["children"]["respond"]
    assert "3des-sha1" in child["esp_proposals"] and "des-md5" in child["esp_proposals"]
    assert any(p.startswith("3des-sha1-modp1024") for p in child["esp_proposals"])
    assert "sha1" in child["ah_proposals"] and "md5" in child["ah_proposals"]


def test_request_server_gets_inpass_and_fallback_hints(matrix):
    host = matrix.host("a-req")
    hints = runtime_hints(matrix, host)
    conns = compile_host(matrix, host)
    trap_prio = int(conns["peer-any"]["children"]["all-ip-traffic"]["priority"])
    assert hints["inpass"] == [trap_prio]
    fb = hints["fallback"]["peer-any"]
    assert fb["seconds"] == 3.0 and fb["children"] == [{
        "rule": "all-ip-traffic", "local_ts": ["10.20.0.13/32"], "remote_suffix": "",
        "remote_prefixes": ["0.0.0.0/0"], "priority": trap_prio - 1}]
    assert conns["peer-any"]["remote_addrs"] == ["%any"]  # All IP Traffic: any peer
    # ... in the same connection as the default response rule, so any peer finds either
    assert list(conns["peer-any"]["children"]) == ["all-ip-traffic", "respond"]


def test_secure_server_has_inpass_but_no_fallback(matrix):
    hints = runtime_hints(matrix, matrix.host("a-sec"))
    assert hints["inpass"] and hints["fallback"] == {}


def test_respond_only_and_plain_hosts_need_no_runtime_work(matrix):
    assert runtime_hints(matrix, matrix.host("a-resp")) == {"inpass": [], "fallback": {}}
    assert runtime_hints(matrix, matrix.host("a-none")) == {"inpass": [], "fallback": {}}


def test_icmp_permit_outranks_the_all_traffic_rule(matrix):
    host = matrix.host("a-sec")
    policy = matrix.policy("secure-server-require-security")
    prios = {r.name: priority(r, host, i) for i, r in enumerate(policy.rules)}
    assert prios["all-icmp-traffic"] < prios["all-ip-traffic"]


@pytest.mark.parametrize("level,expected", [
    (0, {"kerberos", "rsvp", "multicast", "broadcast"}),
    (1, {"multicast", "broadcast"}),
    (2, {"kerberos", "rsvp"}),
    (3, set()),
])
def test_exemption_levels(level, expected):
    topo = load_topology(TOPOLOGIES / "broadcast-multicast.yaml")
    from dataclasses import replace
    host = replace(topo.host("srv-2000"), exemptions=level)
    kinds = {name.split("-")[1] for name in exemption_selectors(topo, host)}
    assert kinds == expected


def test_kerberos_is_exempt_by_source_or_destination_port():
    topo = load_topology(TOPOLOGIES / "kerberos-exemption-2000.yaml")
    sel = exemption_selectors(topo, topo.host("fe"))
    assert sel["exempt-kerberos-udp-src"] == (["10.10.1.10/32[udp/88]"], ["0.0.0.0/0[udp]"])
    assert sel["exempt-kerberos-udp-dst"] == (["10.10.1.10/32[udp]"], ["0.0.0.0/0[udp/88]"])
    shunts = compile_host(topo, topo.host("fe"))["shunts"]["children"]
    assert all(int(c["priority"]) == EXEMPTION_PRIORITY for c in shunts.values())


def test_subnet_broadcast_is_exempt_under_windows_2000():
    topo = load_topology(TOPOLOGIES / "broadcast-multicast.yaml")
    _, remote = exemption_selectors(topo, topo.host("srv-2000"))["exempt-broadcast"]
    assert "10.30.0.255/32" in remote and "255.255.255.255/32" in remote


def test_fast_profile_failover_client_keeps_its_measured_retransmit_budget():
    """A failover's client detects the dead node after DPD's 1 s plus 4 one-second
    retransmits (the fast profile's crash outage, ~6 s); other hosts keep the lab's default."""
    from lab.compile.strongswan import charon_settings
    from lab.model.load import load_topology

    topology = load_topology(TOPOLOGIES / "exchange-cluster-failover.yaml")
    assert charon_settings(topology, topology.host("fe")) == {"retransmit_timeout": "1.000", "retransmit_tries": "4"}
    plain = load_topology(TOPOLOGIES / "exchange-fe-be-http.yaml")
    assert charon_settings(plain, plain.host("fe")) == {}
