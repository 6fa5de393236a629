"""The topology loader: good files become the model, bad files give exact `FILE:LINE:` problems."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from lab.errors import TopologyError
from lab.model import builtins
from lab.model.builtins import BUILTIN_POLICIES
from lab.model.load import SCHEMA, load_topology
from lab.model.policies import TIMER_PROFILES
from lab.model.services import parse_service
from lab.model.topology import (
    Action,
    Endpoint,
    Failover,
    IkeMethod,
    Result,
    Security,
    SecurityMethod,
    Service,
    TimerProfile,
)

ESP, AH = SecurityMethod(Security.ESP), SecurityMethod(Security.AH)

DATA = Path(__file__).parent / "data"
net = ipaddress.ip_network


@pytest.fixture(autouse=True)
def _in_data(monkeypatch):
    # Paths in messages are as passed, so run from tests/data and pass short relative paths.
    monkeypatch.chdir(DATA)


def problems(path: str) -> list[str]:
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    return info.value.problems


# ---- good files ---------------------------------------------------------------------------


def test_good_file_top_level():
    t = load_topology("good.yaml")
    assert t.name == "exchange-fe-be-http"
    assert t.description.startswith("Front-end requires ESP")
    assert t.path == "good.yaml"
    assert (t.ike_version, t.auth_method) == (2, "psk")  # defaults
    assert [(n.name, n.subnet) for n in t.networks] == [
        ("dmz", net("10.10.1.0/24")),
        ("internal", net("10.10.2.0/24")),
    ]
    assert [h.name for h in t.hosts] == ["fw", "fe", "be", "cl"]


def test_good_file_hosts():
    t = load_topology("good.yaml")
    fe, fw = t.host("fe"), t.host("fw")
    assert fe.role == "front-end" and fe.gateway == "fw" and fe.policy == "fe-to-be-http"
    assert fe.services == (Service("http", "tcp", 80), Service("pop3", "tcp", 110))
    assert fw.addresses == (ipaddress.ip_address("10.10.1.1"), ipaddress.ip_address("10.10.2.1"))
    assert fw.forwards and fw.policy is None and fw.gateway is None
    assert t.host("be").services[1] == Service("tcp/8080", "tcp", 8080)
    assert [h.name for h in t.ipsec_hosts] == ["fe", "be"]


def test_good_file_policies_user_then_builtin():
    t = load_topology("good.yaml")
    assert [p.name for p in t.policies] == [
        "fe-to-be-http", "client-respond-only", "server-request-security",
        "secure-server-require-security"]
    assert t.policy("client-respond-only") is BUILTIN_POLICIES["client-respond-only"]
    user = t.policy("fe-to-be-http")
    assert not user.builtin and user.respond  # the default response rule is on by default
    assert user.fallback_seconds == 3.0
    assert [r.name for r in user.rules] == ["fe-be-http", "dmz-clear", "block-one"]


def test_good_file_rules_resolve_endpoints():
    rules = load_topology("good.yaml").policy("fe-to-be-http").rules
    http, clear, block = rules
    assert (http.filter.source.kind, http.filter.source.networks) == ("me", ())
    assert http.filter.destination.kind == "host"
    assert http.filter.destination.networks == (net("10.10.2.20/32"),)
    assert (http.filter.protocol, http.filter.destination_port, http.filter.source_port) == (
        "tcp", 80, None)
    assert http.action is Action.REQUIRE and http.security == (ESP, AH)
    assert (http.inbound_passthrough, http.fallback_to_clear, http.pfs_group) == (
        False, False, None)
    assert http.filter.mirrored
    assert (clear.filter.destination.kind, clear.filter.destination.networks) == (
        "subnet", (net("10.10.1.0/24"),))
    assert clear.filter.protocol is None and clear.security == ()
    assert block.filter.source.kind == "address"
    assert block.filter.source.networks == (net("10.10.2.99/32"),)
    assert block.filter.protocol == "47" and block.action is Action.BLOCK


def test_good_file_where():
    http = load_topology("good.yaml").policy("fe-to-be-http").rules[0]
    assert str(http.where) == "good.yaml:31: policies.fe-to-be-http.rules[0]"


def test_good_file_expectations():
    t = load_topology("good.yaml")
    assert [e.id for e in t.expectations] == ["fe->be:http", "cl->fe:http", "cl->be:tcp/8080"]
    assert [e.result for e in t.expectations] == [Result.ESP, Result.CLEAR, Result.DROPPED]
    assert str(t.expectations[2].where) == "good.yaml:45: expect[2]"


def test_ike_v1_any_and_security_default():
    t = load_topology("good-v1.yaml")
    assert t.ike_version == 1
    ldap, dns = t.policy("dc-ldap").rules
    assert ldap.security == (ESP,)  # require without security offers ESP
    assert t.ike_methods == () and t.ike_lifetime_minutes is None
    assert [h.exemptions for h in t.hosts] == [3, 3]  # Windows Server 2003 by default
    assert ldap.filter.source.kind == "subnet"
    assert dns.filter.source.networks == (net("0.0.0.0/0"),)
    assert (dns.filter.source_port, dns.filter.destination_port) == (1024, 53)
    assert t.host("cl").policy == "client-respond-only"


def test_minimal_file_defaults():
    t = load_topology("minimal.yaml")
    assert t.description == "" and t.expectations == ()
    assert t.policies == tuple(BUILTIN_POLICIES.values())
    pc = t.host("pc")
    assert pc.gateway is None and pc.policy is None and pc.services == () and not pc.forwards


def test_model_holds_plain_python_values():
    # ruamel hands out str/int subclasses; downstream code and pickling expect plain ones.
    t = load_topology("good.yaml")
    rule = t.policy("fe-to-be-http").rules[0]
    values = [t.name, t.hosts[0].name, t.hosts[0].interfaces[0].network, rule.name,
              rule.filter.destination.text, t.expectations[0].source]
    assert all(type(v) is str for v in values)
    assert type(rule.filter.destination_port) is int and type(t.ike_version) is int


def test_schema_is_valid_draft_2020_12():
    Draft202012Validator.check_schema(SCHEMA)
    shipped = json.loads((Path(__file__).parents[1] / "lab/model/schema.json").read_text())
    assert shipped == SCHEMA



# ---- Windows semantics: IKEv1, exemptions, request rules, built-ins, new expectations ---------


def test_windows_file_ike_v1_main_mode():
    t = load_topology("good-windows.yaml")
    assert (t.ike_version, t.ike_lifetime_minutes) == (1, 480)
    assert t.ike_methods == (IkeMethod("3des", "sha1", 2), IkeMethod("des", "md5", 1))
    assert all(type(v) is int for m in t.ike_methods for v in [m.dh_group])


def test_windows_file_exemptions_default_and_per_host():
    t = load_topology("good-windows.yaml")  # top level windows-2003; fe windows-2000; be 1
    assert {h.name: h.exemptions for h in t.hosts} == {
        "fw": 3, "fe": 0, "be": 1, "dc": 3, "cl": 3, "nt4": 3}
    assert load_topology("minimal.yaml").host("pc").exemptions == 3  # nothing said: 2003


def test_windows_file_policy_options():
    t = load_topology("good-windows.yaml")
    fe = t.policy("fe-request")
    assert (fe.respond, fe.fallback_seconds, fe.builtin) == (False, 0.5, False)
    copy = t.policy("respond-only-copy")  # `rules: []`: only the default response rule
    assert (copy.rules, copy.respond, copy.fallback_seconds) == ((), True, 3.0)


def test_windows_file_request_rule_with_options():
    request, require, ping = load_topology("good-windows.yaml").policy("fe-request").rules
    assert request.action is Action.REQUEST and request.negotiates
    assert request.filter.protocol is None and request.filter.destination.text == "be"
    assert (request.inbound_passthrough, request.fallback_to_clear, request.pfs_group) == (
        False, True, 2)
    assert request.security == (
        SecurityMethod(Security.ESP, "3des", "sha1", 3600, 100000),
        SecurityMethod(Security.ESP, "aes256gcm16"),
        SecurityMethod(Security.ESP, "null", "md5"),  # a bare YAML null is the null cipher
        SecurityMethod(Security.AH, None, "md5"),
        AH,
    )
    assert require.action is Action.REQUIRE and require.security == (ESP,)
    assert (require.inbound_passthrough, require.fallback_to_clear, require.pfs_group) == (
        True, False, None)
    assert ping.action is Action.PERMIT and not ping.negotiates
    assert (ping.filter.protocol, ping.security, ping.inbound_passthrough) == ("icmp", (), False)


def test_windows_file_builtins_selected_by_hosts():
    t = load_topology("good-windows.yaml")
    assert (t.host("be").policy, t.host("dc").policy) == (
        "secure-server-require-security", "server-request-security")
    for name in ("secure-server-require-security", "server-request-security"):
        assert t.policy(name) is BUILTIN_POLICIES[name]
    assert [h.name for h in t.ipsec_hosts] == ["fe", "be", "dc", "cl"]


def test_windows_file_expectations():
    t = load_topology("good-windows.yaml")
    assert [e.id for e in t.expectations] == [
        "fe->be:http", "fe->be:pop3:tamper", "fe->dc:ldap", "cl->be:http", "be->nt4:http",
        "be->dc:udp/9999@broadcast", "be->dc:udp/9999", "fe->cl:icmp", "fe->be:pop3"]
    http, tamper, ldap, cl_be, nt4, broadcast, unicast, ping, pop3 = t.expectations
    assert (http.behaviours, tamper.behaviours, ldap.behaviours) == (("B3",), ("B2", "B14"), ())
    assert (tamper.tamper, pop3.tamper, http.tamper) == (True, False, False)
    assert [e.ike for e in (ldap, cl_be, nt4, http)] == ["established", "established", "failed",
                                                        None]
    assert (broadcast.via, unicast.via) == ("broadcast", "unicast")
    assert ping.service == Service("icmp", "icmp", 0) and ping.result is Result.CLEAR
    assert all(type(b) is str for b in tamper.behaviours)


# ---- clusters, failover scenarios and timer profiles (behaviour B9) --------------------------

HTTP, IMAP = Service("http", "tcp", 80), Service("imap", "tcp", 143)


def test_cluster_file_cluster():
    t = load_topology("good-cluster.yaml")
    mbx = t.cluster("mbx")
    assert (mbx.vip, mbx.network, mbx.owner) == (ipaddress.ip_address("10.10.2.20"), "internal",
                                                 "be2")
    assert mbx.nodes == ("be1", "be2")  # file order, not owner first
    assert (mbx.policy, mbx.services) == ("client-respond-only", (HTTP, IMAP))
    assert all(type(v) is str for v in (mbx.name, mbx.network, mbx.owner, *mbx.nodes))


def test_cluster_nodes_take_policy_and_services_from_the_cluster():
    t = load_topology("good-cluster.yaml")
    for name in ("be1", "be2"):
        node = t.host(name)
        assert (node.cluster, node.policy, node.services) == ("mbx", "client-respond-only",
                                                              (HTTP, IMAP))
    assert t.host("fe").cluster is None and t.host("cl").policy is None
    assert [h.name for h in t.ipsec_hosts] == ["fe", "be1", "be2"]  # nodes are IPsec hosts


def test_cluster_name_in_a_filter_means_its_vip():
    rule = load_topology("good-cluster.yaml").policy("fe-to-vip").rules[0]
    assert rule.filter.destination == Endpoint("cluster", "mbx", (net("10.10.2.20/32"),))
    assert rule.filter.destination.prefixes_for(None) == (net("10.10.2.20/32"),)


def test_cluster_name_as_expectation_destination():
    vip, node = load_topology("good-cluster.yaml").expectations
    assert (vip.source, vip.destination, vip.id) == ("fe", "mbx", "fe->mbx:http")
    assert (node.destination, node.result) == ("be1", Result.CLEAR)


def test_failover_scenarios_and_defaults():
    t = load_topology("good-cluster.yaml")
    planned, crash = t.failovers
    assert planned == Failover("planned-move", "planned", "fe", "mbx", HTTP, 6.0)  # defaults
    assert (planned.cleartext, planned.rate, planned.slow) == ("none", 20.0, False)
    assert str(planned.where) == "good-cluster.yaml:20: failover[0]"
    assert crash == Failover("node-crash", "crash", "fe", "mbx", Service("tcp/143", "tcp", 143),
                             10.5, cleartext="allowed", rate=5.0, slow=True)
    assert all(type(v) is float for f in t.failovers for v in (f.max_seconds, f.rate))


def test_timer_profiles():
    t = load_topology("good-cluster.yaml")
    nlb = t.policy("fe-to-vip").timers
    assert nlb == TimerProfile("windows-2003-nlb", 0.05)
    assert (nlb.idle_seconds, nlb.renegotiate_seconds) == pytest.approx((3.0, 3.0))
    assert t.policy("slow-respond").timers == TimerProfile("windows-2000", 1.0)
    assert t.policy("client-respond-only").timers == TimerProfile()  # built-ins: fast
    assert load_topology("good.yaml").policy("fe-to-be-http").timers == TimerProfile("fast")


def test_timer_profile_names_match_the_schema():
    assert list(TIMER_PROFILES) == SCHEMA["$defs"]["timerProfile"]["enum"]
    for name in TIMER_PROFILES:
        assert TimerProfile(name).idle_seconds > 0  # the model knows each one


def test_no_clusters_no_failovers():
    t = load_topology("good.yaml")
    assert (t.clusters, t.failovers) == ((), ())
    assert {h.cluster for h in t.hosts} == {None}


# ---- built-in policies and services ---------------------------------------------------------


def test_icmp_service():
    assert parse_service("icmp") == Service("icmp", "icmp", 0)
    assert parse_service("udp/9999") == Service("udp/9999", "udp", 9999)


def test_builtin_request_and_require_security_as_windows_ships_them():
    methods = (SecurityMethod(Security.ESP, "3des", "sha1"),
               SecurityMethod(Security.ESP, "3des", "md5"),
               SecurityMethod(Security.AH, None, "sha1"), SecurityMethod(Security.AH, None, "md5"))
    for name, action, fallback in [("server-request-security", Action.REQUEST, True),
                                   ("secure-server-require-security", Action.REQUIRE, False)]:
        policy = BUILTIN_POLICIES[name]
        assert policy.builtin and policy.respond and policy.fallback_seconds == 3.0
        ip, icmp = policy.rules
        assert (ip.name, ip.action, ip.security) == ("all-ip-traffic", action, methods)
        assert (ip.inbound_passthrough, ip.fallback_to_clear, ip.pfs_group) == (
            True, fallback, None)
        assert (ip.filter.source.kind, ip.filter.destination.kind, ip.filter.protocol) == (
            "me", "any", None)
        assert ip.filter.destination.networks == (net("0.0.0.0/0"),)
        assert (icmp.name, icmp.action, icmp.filter.protocol) == (
            "all-icmp-traffic", Action.PERMIT, "icmp")
    assert BUILTIN_POLICIES["client-respond-only"].rules == ()


def test_builtin_copy_in_the_docstring_gives_the_same_rules(tmp_path):
    # builtins.py tells users how to copy a built-in: that text must be true.
    doc = builtins.__doc__
    policies = doc[doc.index("    policies:\n"):doc.index("\nSecure Server")]
    path = tmp_path / "copy.yaml"
    head = ("name: copy\nnetworks: {lan: 10.0.0.0/24}\nhosts:\n"
            "  pc: {role: client, interfaces: {lan: 10.0.0.5}, policy: my-request-security}\n")
    path.write_text(head + "\n".join(line[4:] for line in policies.splitlines()))
    copy = load_topology(path).policy("my-request-security")
    original = BUILTIN_POLICIES["server-request-security"]
    assert (copy.rules, copy.respond) == (original.rules, original.respond)  # `where` not compared


# ---- bad files: the exact first problem -------------------------------------------------------

BAD = {
    "yaml-indent": "7: invalid YAML: bad indentation: this line does not line up with the "
    "lines above",
    "yaml-duplicate-key": "4: invalid YAML: duplicate key 'lan'",
    "empty": "1: the file is empty; a topology needs name, networks and hosts",
    "key-missing": "5: hosts.pc: missing required key 'role'",
    "key-missing-top": "2: missing required key 'hosts'",
    "key-unknown": "8: hosts.pc: unknown key 'polcy' (did you mean 'policy'?)",
    "role-bad": "6: hosts.fe.role: must be one of front-end, back-end, domain-controller, "
    "firewall, client, edge (got 'frontend')",
    "name-bad": "1: name: must be lowercase letters, digits and '-', not starting with '-' "
    "(got 'Exchange_Lab')",
    "host-name-long": "5: hosts.exchange-frontend-server-in-the-perimeter-network-of-contoso-com1: name must be 1-63 lowercase letters, "
    "digits and '-', starting with a letter (got 'exchange-frontend-server-in-the-perimeter-network-of-contoso-com1')",
    "subnet-bad": "3: networks.dmz: '10.10.1.0/33' is not an IPv4 subnet",
    "subnet-host-bits": "3: networks.dmz: '10.10.1.5/24' has host bits set; "
    "the subnet is 10.10.1.0/24",
    "address-bad": "5: hosts.fe.interfaces.dmz: '10.10.1.300' is not an IPv4 address",
    "address-outside": "8: hosts.fe.interfaces.dmz: 10.10.2.10 is not in network dmz "
    "(10.10.1.0/24)",
    "address-broadcast": "5: hosts.fe.interfaces.dmz: 10.10.1.255 is the broadcast address "
    "of dmz (10.10.1.0/24)",
    "address-duplicate": "6: hosts.be.interfaces.dmz: 10.10.1.10 is already used by "
    "hosts.fe.interfaces.dmz (line 5)",
    "network-unknown": "5: hosts.fe.interfaces.dmzz: no network 'dmzz'; networks are dmz",
    "gateway-unknown": "12: hosts.fe.gateway: no host 'fw2' (did you mean 'fw'?)",
    "gateway-unreachable": "7: hosts.fe.gateway: host 'fw' shares no network with 'fe'",
    "gateway-self": "5: hosts.fe.gateway: a host cannot be its own gateway",
    "service-unknown": "10: hosts.fe.services[1]: unknown service 'htttp'; use one of dns, gc, "
    "http, https, icmp, imap, kerberos, kerberos-tcp, ldap, pop3, rpc, smtp or a literal like "
    "tcp/8080",
    "policy-unknown": "5: hosts.fe.policy: no policy 'fe-to-be'; known policies: "
    "fe-to-be-http, client-respond-only, server-request-security, "
    "secure-server-require-security",
    "policy-shadows-builtin": "7: policies.client-respond-only: 'client-respond-only' is the "
    "name of a built-in policy; choose another",
    "security-ah-esp": "13: policies.p.rules[0].security: 'ah+esp' cannot be reproduced: "
    "strongSwan negotiates AH or ESP, not both on one SA",
    "security-with-permit": "12: policies.p.rules[0].security: only a request or require "
    "rule has security (this rule is permit)",
    "filter-no-me": "11: policies.p.rules[0].filter: one side must be 'me'",
    "filter-host-unknown": "13: policies.p.rules[0].filter.to: no host 'bee' (did you mean "
    "'be'?); use me, any, a host name, an IPv4 address or a subnet",
    "filter-port-icmp": "10: policies.p.rules[0].filter.port: needs protocol tcp or udp "
    "(protocol is icmp)",
    "filter-mirrored": "10: policies.p.rules[0].filter.mirrored: strongSwan installs every "
    "policy in both directions: one-way (unmirrored) filters cannot be reproduced",
    "certificate-psk": "7: hosts.fe.certificate: machine certificates need authentication: "
    "{method: certificates} (this topology uses psk)",
    "certificate-no-policy": "10: hosts.pc.certificate: pc has no policy, so it speaks no IPsec "
    "and needs no machine certificate; add a policy or remove certificate",
    "auth-kerberos": "3: authentication.method: strongSwan cannot authenticate IKE with "
    "Kerberos; use certificates or psk",
    "ike-version": "2: ike.version: must be one of 1, 2 (got 3)",
    "expect-duplicate": "9: expect[1]: duplicate expectation fe -> be tcp/80 (first at line 8)",
    "expect-same-host": "7: expect[0].to: from and to are the same host 'fe'",
    "expect-result": "11: expect[0].result: must be one of esp, ah, ah+esp, clear, dropped, "
    "refused, tls (got 'encrypted')",
    "ike-encryption": "5: ike.methods[0].encryption: must be one of 3des, des, aes128, aes192, "
    "aes256 (got 'aes128gcm16')",
    "ike-dh-group": "5: ike.methods[1].dh_group: must be one of 1, 2, 5, 14, 15, 16, 19, 20, 21, "
    "31 (got 3)",
    "ike-method-missing": "4: ike.methods[0]: missing required key 'dh_group'",
    "ike-lifetime": "2: ike.lifetime_minutes: must be a whole number of minutes from 1 to 2880 "
    "(48 hours) (got 0)",
    "exemptions-top": "2: exemptions: must be windows-2000, windows-2003 or a number 0-3 "
    "(got 'windows-xp')",
    "exemptions-host": "5: hosts.pc.exemptions: must be windows-2000, windows-2003 or a number "
    "0-3 (got 4)",
    "policy-does-nothing": "7: policies.p: this policy does nothing (no rules, and "
    "default_response is false); add a rule or remove default_response: false",
    "policy-option-type": "8: policies.p.simple_policy_update: must be true or false "
    "(got 'yes')",
    "request-passthrough-permit": "13: policies.p.rules[0].inbound_passthrough: only a request or "
    "require rule has inbound_passthrough (this rule is permit)",
    "require-fallback": "13: policies.p.rules[0].fallback_to_clear: require never falls back to "
    "clear; use action: request",
    "fallback-block": "13: policies.p.rules[0].fallback_to_clear: only a request rule has "
    "fallback_to_clear (this rule is block)",
    "pfs-permit": "13: policies.p.rules[0].pfs: only a request or require rule has pfs (this rule "
    "is permit)",
    "pfs-group": "13: policies.p.rules[0].pfs: must be one of 1, 2, 5, 14, 15, 16, 19, 20, 21, 31 "
    "(got 3)",
    "security-ah-encryption": "14: policies.p.rules[0].security[0].encryption: AH has no "
    "encryption; use protocol: esp, or remove encryption",
    "security-esp-null": "13: policies.p.rules[0].security: ESP null needs integrity (like sha1): "
    "with neither encryption nor integrity it protects nothing",
    "security-esp-no-integrity": "13: policies.p.rules[0].security[1]: ESP with 3des needs "
    "integrity too (like sha1); only the gcm ciphers carry their own",
    "security-gcm-integrity": "16: policies.p.rules[0].security[0].integrity: aes128gcm16 carries "
    "its own integrity; remove integrity",
    "security-encryption": "13: policies.p.rules[0].security[0].encryption: must be one of 3des, "
    "des, aes128, aes192, aes256, aes128gcm16, aes256gcm16, null (got 'blowfish')",
    "security-integrity": "13: policies.p.rules[0].security[0].integrity: must be one of md5, "
    "sha1, sha256, sha384, sha512 (got 'sha2')",
    "security-same-offer": "13: policies.p.rules[0].security[1]: is the same offer as "
    "policies.p.rules[0].security[0]",
    "security-mapping-ah-esp": "13: policies.p.rules[0].security[0]: 'ah+esp' cannot be "
    "reproduced: strongSwan negotiates AH or ESP, not both on one SA",
    "security-lifetime": "14: policies.p.rules[0].security[0].lifetime.seconds: must be a whole "
    "number of seconds from 1 to 172800 (48 hours) (got 0)",
    "security-protocol-missing": "13: policies.p.rules[0].security[0]: missing required key "
    "'protocol'",
    "auth-kerberos-deadlock": "4: authentication.method: strongSwan cannot authenticate IKE "
    "with Kerberos; use certificates or psk",
    "expect-tamper-no-router": "11: expect[0].tamper: tamper needs a router between fe and cl "
    "(the source's gateway alters packets in flight)",
    "expect-tamper-icmp": "11: expect[0].tamper: tamper needs a tcp or udp service "
    "(got 'icmp')",
    "expect-via-tcp": "11: expect[0].via: broadcast needs a udp service like udp/9999 "
    "(got 'http')",
    "expect-via-routed": "11: expect[0].via: multicast needs fe and be on one shared network; "
    "routers do not forward it",
    "expect-via-bad": "11: expect[0].via: must be one of unicast, broadcast, multicast "
    "(got 'anycast')",
    "expect-ike-bad": "11: expect[0].ike: must be one of established, failed (got 'up')",
    "expect-behaviour-bad": "11: expect[0].behaviour[1]: must be a behaviour id B1 to B17 "
    "(got 'B18')",
    "expect-duplicate-via": "13: expect[2]: duplicate expectation fe -> cl udp/9999 via "
    "broadcast (first at line 12)",
    # clusters, failover, timers
    "cluster-key-unknown": "9: clusters.mbx: unknown key 'nodes'",
    "cluster-name-host": "10: clusters.mbx: 'mbx' is already a host name; a cluster needs a name "
    "of its own, as filters may name either",
    "cluster-node-network": "7: hosts.be2.cluster: be2 has no interface on internal, the network "
    "of cluster mbx's VIP 10.10.2.20",
    "cluster-node-policy": "6: hosts.be1.policy: a cluster node takes its policy and services "
    "from cluster 'mbx'",
    "cluster-node-services": "8: hosts.be2.services: a cluster node takes its policy and services "
    "from cluster 'mbx'",
    "cluster-one-node": "9: clusters.mbx: a cluster needs at least 2 nodes (hosts with cluster: "
    "mbx); it has 1 (be1)",
    "cluster-owner": "9: clusters.mbx.owner: 'fe' is not a node of cluster 'mbx'; its nodes are "
    "be1, be2",
    "cluster-policy-unknown": "9: clusters.mbx.policy: no policy 'client-respond'; known "
    "policies: p, client-respond-only, server-request-security, secure-server-require-security",
    "cluster-unknown": "6: hosts.be1.cluster: no cluster 'mbz' (did you mean 'mbx'?)",
    "cluster-vip-bad": "9: clusters.mbx.vip: '10.10.2.300' is not an IPv4 address",
    "cluster-vip-outside": "9: clusters.mbx.vip: 10.10.3.20 is in no network; networks are dmz "
    "(10.10.1.0/24), internal (10.10.2.0/24)",
    "cluster-vip-used": "9: clusters.mbx.vip: 10.10.2.22 is already used by "
    "hosts.be2.interfaces.internal (line 7)",
    "expect-cluster-broadcast": "18: expect[0].via: broadcast goes to a whole network, not to "
    "cluster mbx's VIP; use unicast",
    "expect-from-cluster": "18: expect[0].from: 'mbx' is a cluster; an expectation goes from a "
    "host (to: may name a cluster, meaning its VIP)",
    "expect-to-own-cluster": "18: expect[0].to: 'be1' is a node of cluster 'mbx'; expect traffic "
    "to its VIP from a host outside the cluster",
    "failover-cleartext": "16: failover[0].cleartext: must be one of none, allowed (got 'some')",
    "failover-from-cluster": "16: failover[0].from: 'mbx' is a cluster; requests come from a host",
    "failover-from-node": "16: failover[0].from: 'be2' is a node of cluster 'mbx'; requests come "
    "from a host outside the cluster",
    "failover-max-seconds": "16: failover[0].max_seconds: must be a number of seconds greater "
    "than 0 (got 0)",
    "failover-mode": "16: failover[0].mode: must be one of planned, crash (got 'reboot')",
    "failover-name-duplicate": "17: failover[1].name: scenario 'move' is already defined at "
    "line 16",
    "failover-no-cluster": "13: failover: failover needs a cluster; define one under clusters: "
    "and give its nodes cluster: NAME",
    "failover-rate": "16: failover[0].rate: must be a number of requests per second, 1-100 "
    "(got 200)",
    "failover-service-icmp": "16: failover[0].service: failover needs a tcp or udp service "
    "(got 'icmp')",
    "failover-service-not-served": "16: failover[0].service: cluster 'mbx' does not serve imap "
    "(its services: http); add it to clusters.mbx.services",
    "failover-to-unknown": "16: failover[0].to: no cluster 'mxb' (did you mean 'mbx'?)",
    "failover-which-cluster": "19: failover[0]: there are 2 clusters; say which one with to: "
    "(mbx, pf)",
    "filter-cluster-unknown": "14: policies.p.rules[0].filter.to: no host or cluster 'mbxx' (did "
    "you mean 'mbx'?); use me, any, a host or cluster name, an IPv4 address or a subnet",
    "timers-fast-scale": "12: policies.p.timers.time_scale: time_scale applies to the Windows "
    "profiles (windows-2000, windows-2003-nlb); fast uses strongSwan's own timers",
    "timers-profile": "12: policies.p.timers: must be fast, windows-2000, windows-2003-nlb or a "
    "mapping like {profile: windows-2000, time_scale: 0.05} (got 'windows-2008')",
    "timers-scale": "12: policies.p.timers.time_scale: must be a number greater than 0, at most 1 "
    "(got 2)",
}


@pytest.mark.parametrize("name, expected", BAD.items(), ids=list(BAD))
def test_bad_file_first_problem(name, expected):
    path = f"bad/{name}.yaml"
    assert problems(path)[0] == f"{path}:{expected}"


def test_every_bad_fixture_is_tested():
    assert sorted(p.stem for p in (DATA / "bad").glob("*.yaml")) == sorted([*BAD, "three-problems"])


def test_all_problems_reported_in_line_order():
    assert problems("bad/three-problems.yaml") == [
        "bad/three-problems.yaml:6: hosts.fe.role: must be one of front-end, back-end, "
        + "domain-controller, firewall, client, edge (got 'frontend')",
        "bad/three-problems.yaml:8: hosts.fe.gateway: no host 'fw'",
        "bad/three-problems.yaml:9: hosts.be.services[0]: unknown service 'htp'; use one of "
        + "dns, gc, http, https, icmp, imap, kerberos, kerberos-tcp, ldap, pop3, rpc, smtp or a "
        + "literal like tcp/8080",
    ]


def test_error_prints_one_problem_per_line():
    with pytest.raises(TopologyError) as info:
        load_topology("bad/three-problems.yaml")
    assert str(info.value).count("\n") == 2 and info.value.exit_code == 2


def test_missing_file():
    assert problems("nowhere.yaml") == ["nowhere.yaml: no such file"]


def test_path_object_and_absolute_path():
    path = DATA / "bad" / "gateway-self.yaml"
    assert problems(path)[0].startswith(f"{path}:5: hosts.fe.gateway:")
    assert load_topology(DATA / "minimal.yaml").path == str(DATA / "minimal.yaml")


# ---- inline cases: one small change to a good file -----------------------------------------

BASE = """\
name: t
networks: {dmz: 10.10.1.0/24}
hosts:
  fe: {role: front-end, interfaces: {dmz: 10.10.1.10}, policy: p}
  be: {role: back-end, interfaces: {dmz: 10.10.1.20}}
policies:
  p:
    rules:
      - name: r
        filter: {from: me, to: be, protocol: tcp, port: 80}
        action: require
"""


RULE = "policies.p.rules[0]"
INLINE = [  # (text to replace in BASE, replacement, expected first problem after FILE:)
    ("port: 80}", "port: 80000}",
     f"10: {RULE}.filter.port: must be a port number 1-65535 (got 80000)"),
    ("protocol: tcp", "protocol: tpc",
     f"10: {RULE}.filter.protocol: must be tcp, udp, icmp, any or a protocol number 0-255 "
     + "(got 'tpc')"),
    ("action: require", "action: require\n        security: [esp, foo]",
     f"12: {RULE}.security[1]: must be one of esp, ah, ah+esp (got 'foo')"),
    ("action: require", "action: require\n        security: foo",
     f"12: {RULE}.security: must be esp, ah, a mapping like {{protocol: esp, encryption: 3des, "
     + "integrity: sha1} or a list of them (got 'foo')"),
    ("action: require", "action: require\n        security: [esp, esp]",
     f"12: {RULE}.security: lists esp more than once"),
    ("to: be,", "to: me,",
     f"10: {RULE}.filter: only one side can be 'me'; the other is the peer"),
    ("to: be,", "to: 10.10.1.7/24,",
     f"10: {RULE}.filter.to: '10.10.1.7/24' has host bits set; the subnet is 10.10.1.0/24"),
    ("to: be,", "to: 10.10.1.300,",
     f"10: {RULE}.filter.to: '10.10.1.300' is not an IPv4 address"),
    ("    rules:\n", "    rules: []\n    x:\n",
     "9: policies.p: unknown key 'x'"),  # a policy with no rules: only the default response
    ("hosts:\n", "hosts:\n  Fe: {role: client, interfaces: {dmz: 10.10.1.5}}\n",
     "4: hosts.Fe: name must be 1-63 lowercase letters, digits and '-', starting with a letter "
     + "(got 'Fe')"),
    ("hosts:\n", "hosts:\n  me: {role: client, interfaces: {dmz: 10.10.1.5}}\n",
     "4: hosts.me: 'me' is a filter keyword; choose another name"),
    ("policy: p}", "policy: p, services: http}",
     "4: hosts.fe.services: must be a list of services like [http, tcp/8080] (got 'http')"),
    ("name: t\n", "name: t\nexpectations: []\n",
     "2: unknown key 'expectations' (did you mean 'expect'?)"),
    ("{dmz: 10.10.1.0/24}", "",
     "2: networks: must be a mapping of network name to IPv4 subnet (got nothing)"),
    ("{dmz: 10.10.1.0/24}", "{dmz: 10.10.1.0}",
     "2: networks.dmz: '10.10.1.0' is not an IPv4 subnet; add a prefix length: 10.10.1.0/24?"),
]


@pytest.mark.parametrize("old, new, expected", INLINE)
def test_inline_problem(tmp_path, old, new, expected):
    path = tmp_path / "t.yaml"
    assert old in BASE
    path.write_text(BASE.replace(old, new, 1))
    assert problems(path)[0] == f"{path}:{expected}"


def test_inline_base_is_good(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(BASE)
    assert load_topology(path).policy("p").rules[0].security == (ESP,)


def test_broken_hosts_mapping_does_not_cascade(tmp_path):
    # With `hosts` unusable, every host reference would fail too: report only the cause.
    path = tmp_path / "t.yaml"
    path.write_text(BASE.replace("hosts:\n", "hosts: 5\nold:\n", 1))
    assert problems(path) == [
        f"{path}:3: hosts: must be a mapping of host name to host (got 5)",
        f"{path}:4: unknown key 'old'",
    ]


# Every new key once, compactly (each value is replaced in turn, and parsing YAML is slow).
WINDOWS = """\
name: w
ike: {version: 1, methods: [{encryption: 3des, integrity: sha1, dh_group: 2}], lifetime_minutes: 5}
exemptions: windows-2000
authentication: {method: kerberos}
networks: {a: 10.0.1.0/24, b: 10.0.2.0/24}
hosts:
  r: {role: firewall, interfaces: {a: 10.0.1.1, b: 10.0.2.1}}
  fe: {role: front-end, interfaces: {a: 10.0.1.10}, gateway: r, policy: p, exemptions: 3}
  dc: {role: domain-controller, interfaces: {b: 10.0.2.2}, gateway: r, policy: respond}
policies:
  respond: {default_response: true, rules: []}
  p:
    default_response: false
    simple_policy_update: true
    rules:
      - name: x
        filter: {from: me, to: dc}
        action: request
        inbound_passthrough: false
        fallback_to_clear: true
        pfs: 2
        security: [{protocol: esp, encryption: 3des, integrity: sha1, lifetime: {seconds: 60}}, ah]
expect:
  - {from: fe, to: dc, service: udp/99, result: esp, ike: failed, tamper: true, behaviour: [B5]}
  - {from: dc, to: r, service: udp/99, result: clear, via: broadcast, behaviour: B17}
"""


# Every cluster key once; two clusters so that `to:` matters.
CLUSTER = """\
name: c
networks: {a: 10.0.1.0/24, b: 10.0.2.0/24}
hosts:
  r: {role: firewall, interfaces: {a: 10.0.1.1, b: 10.0.2.1}}
  fe: {role: front-end, interfaces: {a: 10.0.1.10}, gateway: r, policy: p}
  n1: {role: back-end, interfaces: {b: 10.0.2.21}, gateway: r, cluster: mbx}
  n2: {role: back-end, interfaces: {b: 10.0.2.22}, gateway: r, cluster: mbx}
  n3: {role: back-end, interfaces: {b: 10.0.2.31}, cluster: pf}
  n4: {role: back-end, interfaces: {b: 10.0.2.32}, cluster: pf}
clusters:
  mbx: {vip: 10.0.2.20, owner: n1, policy: client-respond-only, services: [http, udp/99]}
  pf: {vip: 10.0.2.30, owner: n4}
policies:
  p:
    timers: {profile: windows-2000, time_scale: 0.5}
    rules:
      - {name: r, filter: {from: me, to: mbx, protocol: tcp, port: 80}, action: require}
failover:
  - {name: move, mode: planned, from: fe, to: mbx, service: http, max_seconds: 6}
  - {name: crash, mode: crash, from: n3, to: mbx, service: udp/99, max_seconds: 1,
     cleartext: none, rate: 1, slow: false}
expect:
  - {from: fe, to: mbx, service: http, result: esp, tamper: true}
"""


def test_cluster_text_is_good(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(CLUSTER)
    t = load_topology(path)
    assert [(c.name, c.nodes, c.owner) for c in t.clusters] == [
        ("mbx", ("n1", "n2"), "n1"), ("pf", ("n3", "n4"), "n4")]
    assert (t.cluster("pf").policy, t.host("n3").policy, t.host("n3").services) == (None, None, ())
    assert [(f.source, f.cluster, f.service.port) for f in t.failovers] == [
        ("fe", "mbx", 80), ("n3", "mbx", 99)]  # a node of another cluster may send
    assert t.policy("p").timers == TimerProfile("windows-2000", 0.5)
    assert t.policy("p").timers.idle_seconds == 150.0


CLUSTER_INLINE = [  # (text to replace in CLUSTER, replacement, expected first problem)
    ("b: 10.0.2.0/24}", "b: 10.0.2.0/24, c: 10.0.2.0/25}",
     "11: clusters.mbx.vip: 10.0.2.20 is in more than one network (b, c); a VIP belongs to "
     + "exactly one"),
    ("vip: 10.0.2.20", "vip: 10.0.2.255",
     "11: clusters.mbx.vip: 10.0.2.255 is the broadcast address of b (10.0.2.0/24)"),
    ("vip: 10.0.2.30", "vip: 10.0.2.20",
     "12: clusters.pf.vip: 10.0.2.20 is already used by clusters.mbx.vip (line 11)"),
    ("  mbx: {vip", "  any: {vip", "6: hosts.n1.cluster: no cluster 'mbx'"),
    ("cluster: pf}\nclusters:\n", "cluster: pf}\nclusters:\n  me: {vip: 10.0.2.40, owner: n1}\n",
     "11: clusters.me: 'me' is a filter keyword; choose another name"),
    ("  mbx: {vip", "  Mbx: {vip",
     "11: clusters.Mbx: name must be 1-63 lowercase letters, digits and '-', starting with a "
     + "letter (got 'Mbx')"),
    ("cluster: pf}\nclusters", "cluster: [pf]}\nclusters",
     "9: hosts.n4.cluster: must be a cluster name (got a list)"),
    ("{vip: 10.0.2.30, owner: n4}", "{vip: 10.0.2.30}",
     "12: clusters.pf: missing required key 'owner'"),
    ("to: mbx, service: http", "service: http",
     "19: failover[0]: there are 2 clusters; say which one with to: (mbx, pf)"),
    ("to: mbx, service: http", "to: n1, service: http", "19: failover[0].to: no cluster 'n1'"),
    ("from: fe, to: mbx", "from: fee, to: mbx",
     "19: failover[0].from: no host 'fee' (did you mean 'fe'?)"),
    ("service: http, max", "service: https, max",
     "19: failover[0].service: cluster 'mbx' does not serve https (its services: http, udp/99); "
     + "add it to clusters.mbx.services"),
    ("service: http, max", "service: htp, max",
     "19: failover[0].service: unknown service 'htp'; use one of dns, gc, http, https, icmp, "
     + "imap, kerberos, kerberos-tcp, ldap, pop3, rpc, smtp or a literal like tcp/8080"),
    ("max_seconds: 6}", "max_seconds: 6, rate: 0.5}",
     "19: failover[0].rate: must be a number of requests per second, 1-100 (got 0.5)"),
    ("max_seconds: 6}", "max_seconds: 6, slow: yes}",
     "19: failover[0].slow: must be true or false (got 'yes')"),
    ("max_seconds: 6}", "max_seconds: six}",
     "19: failover[0].max_seconds: must be a number of seconds greater than 0 (got 'six')"),
    ("{name: move, mode: planned, ", "{name: move, ",
     "19: failover[0]: missing required key 'mode'"),
    ("name: move,", "name: Move,",
     "19: failover[0].name: must be lowercase letters, digits and '-', not starting with '-' "
     + "(got 'Move')"),
    ("{profile: windows-2000, time_scale: 0.5}", "{time_scale: 0.5}",
     "15: policies.p.timers: missing required key 'profile'"),
    ("{profile: windows-2000, time_scale: 0.5}", "{profile: windows-2000, scale: 0.5}",
     "15: policies.p.timers: unknown key 'scale' (did you mean 'time_scale'?)"),
    ("{profile: windows-2000, time_scale: 0.5}", "{profile: nlb}",
     "15: policies.p.timers.profile: must be one of fast, windows-2000, windows-2003-nlb "
     + "(got 'nlb')"),
    ("time_scale: 0.5", "time_scale: 0",
     "15: policies.p.timers.time_scale: must be a number greater than 0, at most 1 (got 0)"),
    ("{from: fe, to: mbx, service: http", "{from: fe, to: mbz, service: http",
     "23: expect[0].to: no host or cluster 'mbz' (did you mean 'mbx'?)"),
    ("{from: fe, to: mbx, service: http", "{from: fe, to: 5, service: http",
     "23: expect[0].to: must be a host or cluster name (got 5)"),
    ("{from: fe, to: mbx, service: http", "{from: n1, to: pf, service: http",  # same network
     "23: expect[0].tamper: tamper needs a router between n1 and pf (the source's gateway "
     + "alters packets in flight)"),
    ("to: mbx, protocol", "to: pf2, protocol",
     "17: policies.p.rules[0].filter.to: no host or cluster 'pf2' (did you mean 'pf'?); use "
     + "me, any, a host or cluster name, an IPv4 address or a subnet"),
]


@pytest.mark.parametrize("old, new, expected", CLUSTER_INLINE)
def test_cluster_inline_problem(tmp_path, old, new, expected):
    path = tmp_path / "t.yaml"
    assert old in CLUSTER
    path.write_text(CLUSTER.replace(old, new, 1))
    found = problems(path)
    assert f"{path}:{expected}" in found
    lines = [int(p.split(":")[1]) for p in found]
    assert lines == sorted(lines)


@pytest.mark.parametrize("junk", ["[]", "{}", "null", "5", "me", "[a, 1]", "true"])
@pytest.mark.parametrize("good", ["BASE", "WINDOWS", "CLUSTER"])
def test_any_value_of_the_wrong_type_gives_problems_not_a_crash(tmp_path, junk, good):
    # The semantic pass runs on files that failed the schema; it must skip, never raise.
    path = tmp_path / "t.yaml"
    text = {"BASE": BASE, "WINDOWS": WINDOWS, "CLUSTER": CLUSTER}[good]
    for match in re.finditer(r"(?<=: )[^,{}\n]+", text):
        path.write_text(text[:match.start()] + junk + text[match.end():])
        try:
            load_topology(path)
        except TopologyError as e:
            assert all(p.startswith(f"{path}:") for p in e.problems)


@pytest.mark.parametrize("action, passthrough, fallback", [
    ("request", True, True), ("require", False, False)])
def test_negotiate_defaults(tmp_path, action, passthrough, fallback):
    path = tmp_path / "t.yaml"
    path.write_text(BASE.replace("action: require", f"action: {action}"))
    rule = load_topology(path).policy("p").rules[0]
    assert (rule.inbound_passthrough, rule.fallback_to_clear) == (passthrough, fallback)
    assert rule.security == (ESP,) and rule.pfs_group is None


def test_encryption_null_written_as_text_or_bare(tmp_path):
    path = tmp_path / "t.yaml"
    for value in ("null", "'null'", "~"):
        path.write_text(BASE.replace("action: require", "action: require\n        security: "
                                     f"{{protocol: esp, encryption: {value}, integrity: sha1}}"))
        assert load_topology(path).policy("p").rules[0].security == (
            SecurityMethod(Security.ESP, "null", "sha1"),)


# ---- the Kerberos deadlock: Kerberos IKE cannot authenticate if Kerberos is inside IPsec -----

KERBEROS = """\
name: k
authentication: {method: kerberos}
networks: {lan: 10.0.0.0/24}
hosts:
  fe: {role: front-end, interfaces: {lan: 10.0.0.10}, policy: p}
  dc: {role: domain-controller, interfaces: {lan: 10.0.0.2}}
  be: {role: back-end, interfaces: {lan: 10.0.0.20}}
policies:
  p:
    rules:
      - name: r
        filter: {from: me, to: dc}
        action: require
"""
REFUSED = "2: authentication.method: strongSwan cannot authenticate IKE with Kerberos; use " \
    "certificates or psk"


def permit_88(protocol: str) -> str:
    return (f"      - {{name: k-{protocol}, filter: {{from: me, to: dc, protocol: {protocol}, "
            f"port: 88}}, action: permit}}\n")


def deadlock(host: str, dc: str, rule: str) -> str:
    return (f"2: authentication.method: deadlock: IKE would authenticate with Kerberos, but "
            f"Kerberos traffic from {host} to {dc} is itself inside IPsec (rule {rule}); exempt "
            "Kerberos (exemptions: windows-2000) or use certificates or psk")


def test_kerberos_deadlock_is_the_second_line():
    path = "bad/auth-kerberos-deadlock.yaml"
    assert problems(path) == [
        f"{path}:4: authentication.method: strongSwan cannot authenticate IKE with Kerberos; "
        + "use certificates or psk",
        f"{path}:4: authentication.method: deadlock: IKE would authenticate with Kerberos, but "
        + "Kerberos traffic from fe to dc is itself inside IPsec (rule "
        + "server-request-security.all-ip-traffic); exempt Kerberos (exemptions: windows-2000) "
        + "or use certificates or psk",
    ]


@pytest.mark.parametrize("old, new, rule", [
    ("", "", "p.r"),  # all traffic to the DC, Windows 2003 exemptions (the default)
    ("{from: me, to: dc}", "{from: me, to: 10.0.0.0/24, protocol: udp, port: 88}", "p.r"),
    ("{from: me, to: dc}", "{from: dc, to: me, protocol: tcp, src_port: 88}", "p.r"),  # mirrored
    ("{from: me, to: dc}", "{from: me, to: any, protocol: 17}", "p.r"),
    ("action: require", "action: request", "p.r"),
    ("networks:", "exemptions: windows-2000\nnetworks:", None),
    ("lan: 10.0.0.10}", "lan: 10.0.0.10}, exemptions: 2", None),  # 2 exempts Kerberos
    ("lan: 10.0.0.10}", "lan: 10.0.0.10}, exemptions: 1", "p.r"),  # 1 does not
    ("to: dc}", "to: be}", None),  # not a domain controller
    ("{from: me, to: dc}", "{from: me, to: dc, protocol: tcp, port: 389}", None),
    ("{from: me, to: dc}", "{from: me, to: dc, protocol: udp, src_port: 88}", None),
    ("action: require", "action: permit", None),
    ("policy: p}", "policy: secure-server-require-security}",
     "secure-server-require-security.all-ip-traffic"),
    ("policy: p}", "policy: client-respond-only}", None),  # never initiates
    # a more specific permit for Kerberos wins over the all-traffic rule, as in Windows
    ("action: require\n", "action: require\n" + permit_88("udp") + permit_88("tcp"), None),
    ("action: require\n", "action: require\n" + permit_88("udp"), "p.r"),  # tcp still caught
])
def test_kerberos_deadlock(tmp_path, old, new, rule):
    path = tmp_path / "t.yaml"
    assert old in KERBEROS
    path.write_text(KERBEROS.replace(old, new, 1))
    expected = [REFUSED] + ([deadlock("fe", "dc", rule)] if rule else [])
    assert problems(path) == [f"{path}:{line}" for line in expected]


def test_no_deadlock_line_without_kerberos(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(KERBEROS.replace("kerberos", "psk"))
    assert load_topology(path).auth_method == "psk"


def test_a_file_read_again_unchanged_is_the_same_model_and_an_edited_one_is_read_anew(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text((DATA / "minimal.yaml").read_text())
    first = load_topology(path)
    assert load_topology(path) is first  # lint, run and report's picture: one read
    path.write_text((DATA / "minimal.yaml").read_text().replace("name: ", "name: x", 1))
    assert load_topology(path) is not first and load_topology(path).name == "x" + first.name
