"""`default_response: {security: [...]}`: the default response rule's security methods, as a
Windows administrator edits them. The lab's default stays the default; a list replaces it, so a
Respond Only host refuses any offer outside it (live: topologies/default-response-methods.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.compile.strongswan import RESPOND_PFS, compile_host
from lab.errors import TopologyError
from lab.model.load import load_topology
from lab.model.topology import Security, SecurityMethod

ROOT = Path(__file__).resolve().parent.parent


def _load(tmp_path, value: str, rules: str = "rules: []"):
    path = tmp_path / "t.yaml"
    path.write_text(f"""name: dr
networks: {{lan: 10.0.0.0/24}}
hosts:
  be: {{role: back-end, interfaces: {{lan: 10.0.0.5}}, policy: p}}
  fe: {{role: front-end, interfaces: {{lan: 10.0.0.6}}}}
policies:
  p:
    default_response: {value}
    {rules}
""")
    return load_topology(path)


def _respond(topology) -> dict:
    return compile_host(topology, topology.host("be"))["peer-any"]["children"]["respond"]


def test_the_default_is_unchanged(tmp_path):
    default = _respond(_load(tmp_path, "true"))
    assert "3des-sha1" in default["esp_proposals"] and "aes256gcm16" in default["esp_proposals"]
    assert "sha1" in default["ah_proposals"] and "md5" in default["ah_proposals"]
    assert _load(tmp_path, "true").policy("p").respond_security == ()


def test_a_listed_method_is_all_the_rule_answers(tmp_path):
    topology = _load(tmp_path, "{security: [{protocol: esp, encryption: 3des, integrity: sha1}]}")
    policy = topology.policy("p")
    assert policy.respond and policy.respond_security == (SecurityMethod(Security.ESP, "3des", "sha1"),)
    child = _respond(topology)
    assert child["esp_proposals"] == ["3des-sha1", "3des-sha1" + RESPOND_PFS]  # with or without PFS
    assert "ah_proposals" not in child  # AH offers are refused


def test_methods_keep_their_order_and_both_protocols(tmp_path):
    child = _respond(_load(tmp_path, "{security: [ah, {protocol: esp, encryption: aes256gcm16}, "
                                     "{protocol: ah, integrity: md5}]}"))
    assert child["ah_proposals"] == ["sha256", "md5", "sha256" + RESPOND_PFS, "md5" + RESPOND_PFS]
    assert child["esp_proposals"] == ["aes256gcm16", "aes256gcm16" + RESPOND_PFS]


def test_the_list_replaces_the_policys_own_rule_methods_too(tmp_path):
    rules = ("rules:\n      - {name: r, filter: {from: me, to: fe, protocol: tcp, port: 80}, action: require, "
             "security: {protocol: esp, encryption: aes128, integrity: sha256}}")
    default = _respond(_load(tmp_path, "true", rules))
    assert "aes128-sha256" in default["esp_proposals"]
    edited = _respond(_load(tmp_path, "{security: {protocol: esp, encryption: null, integrity: sha1}}", rules))
    assert edited["esp_proposals"] == ["null-sha1", "null-sha1" + RESPOND_PFS]


@pytest.mark.parametrize("value,message", [
    ("{security: [foo]}", "8: policies.p.default_response.security[0]: must be one of esp, ah, ah+esp (got 'foo')"),
    ("{securty: esp}", "8: policies.p.default_response: unknown key 'securty' (did you mean 'security'?)"),
    ("{}", "8: policies.p.default_response: missing required key 'security'"),
    ("maybe", "8: policies.p.default_response: must be true, false or a mapping like {security: [esp, ah]} "
              "(got 'maybe')"),
    ("{security: ah+esp}", "8: policies.p.default_response.security: 'ah+esp' cannot be reproduced"),
    ("{security: {protocol: esp, encryption: 3des}}",
     "8: policies.p.default_response.security: ESP with 3des needs integrity too"),
    ("{security: {protocol: ah, encryption: des}}",
     "8: policies.p.default_response.security.encryption: AH has no encryption"),
])
def test_bad_methods_are_one_line_each_naming_the_field(tmp_path, value, message):
    with pytest.raises(TopologyError) as e:
        _load(tmp_path, value)
    first = str(e.value).splitlines()[0]
    assert first.startswith(str(tmp_path / "t.yaml") + ":" + message), first


def test_the_shipped_design_refuses_what_its_list_leaves_out():
    topology = load_topology(ROOT / "topologies" / "default-response-methods.yaml")
    custom = _respond_of(topology, "be-custom")
    assert custom["esp_proposals"][0] == "3des-sha1" and "ah_proposals" not in custom
    assert "aes256gcm16" not in custom["esp_proposals"]
    assert "aes256gcm16" in _respond_of(topology, "be-default")["esp_proposals"]


def _respond_of(topology, host: str) -> dict:
    return compile_host(topology, topology.host(host))["peer-any"]["children"]["respond"]
