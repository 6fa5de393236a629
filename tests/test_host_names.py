"""Host names as administrators write them (a DNS label, up to 63 characters): accepted, kept
in everything the user reads, and never used where Linux limits the length (namespaces,
interfaces), which get short internal ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from lab.compile.plan import build_plan
from lab.compile.strongswan import compile_host
from lab.errors import TopologyError
from lab.model.load import load_topology
from lab.pki import build_pki

ROOT = Path(__file__).parent.parent
LONG = "exchange-backend-mailbox-server-in-the-corporate-network-0001"  # 61 characters
FE = "a" + "b" * 62  # 63: the longest a DNS label may be


def _write(tmp_path, fe=FE, be=LONG, extra=""):
    path = tmp_path / "t.yaml"
    path.write_text(f"""name: names
networks: {{perimeter-network: 10.0.1.0/24, corporate-internal: 10.0.2.0/24}}
hosts:
  sw: {{role: firewall, interfaces: {{perimeter-network: 10.0.1.1, corporate-internal: 10.0.2.1}}}}
  {fe}: {{role: front-end, interfaces: {{perimeter-network: 10.0.1.10}}, gateway: sw, policy: p}}
  {be}: {{role: back-end, interfaces: {{corporate-internal: 10.0.2.20}}, gateway: sw,
         policy: client-respond-only, services: [http]}}
  outlook2002: {{role: client, interfaces: {{perimeter-network: 10.0.1.50}}}}
  dc01-corp: {{role: domain-controller, interfaces: {{corporate-internal: 10.0.2.5}}, gateway: sw}}
{extra}policies:
  p:
    rules:
      - {{name: r, filter: {{from: me, to: {be}, protocol: tcp, port: 80}}, action: require}}
expect:
  - {{from: {fe}, to: {be}, service: http, result: esp}}
  - {{from: outlook2002, to: dc01-corp, service: ldap, result: clear}}
""")
    return path


@pytest.mark.parametrize("name", ["outlook2003", "exchange-fe01", "dc02-corp", "x", FE, "a-"])
def test_names_up_to_63_characters_are_accepted(tmp_path, name):
    topology = load_topology(_write(tmp_path, fe=name))
    assert topology.host(name).policy == "p"
    assert [e.id for e in topology.expectations][0] == f"{name}->{LONG}:http"


@pytest.mark.parametrize("name,why", [
    (FE + "c", "64 characters"), ("1dc", "a digit first"), ("-fe", "a dash first"), ("Fe", "upper case"),
    ("fe_01", "an underscore"), ("fe.corp", "a dot"),
])
def test_other_names_are_refused_with_the_rule(tmp_path, name, why):
    with pytest.raises(TopologyError) as e:
        load_topology(_write(tmp_path, fe=name))
    assert f"hosts.{name}: name must be 1-63 lowercase letters, digits and '-', starting with a letter" \
        in str(e.value), why


def test_namespaces_and_interfaces_get_short_ids_and_the_plan_keeps_the_names(tmp_path):
    topology = load_topology(_write(tmp_path))
    plan = build_plan(topology, "abc123", str(tmp_path))
    names = [h["name"] for h in plan.hosts]
    assert names == ["sw", FE, LONG, "outlook2002", "dc01-corp"]
    namespaces = [h["ns"] for h in plan.hosts] + [plan.switch_ns]
    assert len(set(namespaces)) == len(namespaces)  # a host called 'sw' is not the switch
    assert all(len(ns) <= len("lab-abc123-h99") for ns in namespaces)
    ifnames = [n for h in plan.hosts for i in h["interfaces"] for n in (i["ifname"], i["peer"])]
    assert all(len(n) <= 15 for n in ifnames)  # IFNAMSIZ - 1
    assert [p["src"] for p in plan.probes] == [FE, "outlook2002"]
    assert plan.probes[0]["dst"] == LONG


def test_certificates_carry_the_full_name(tmp_path):
    topology = load_topology(_write(tmp_path, extra="authentication: {method: certificates}\n"))
    pki = build_pki(topology)
    cert = x509.load_pem_x509_certificate(pki.certs[LONG].encode())
    assert cert.subject.rfc4514_string() == f"CN={LONG}"
    conn = compile_host(topology, topology.host(FE))[f"peer-{LONG}"]
    assert conn["remote-1"]["id"] == f"CN={LONG}" and conn["local-1"]["id"] == f"CN={FE}"


def test_the_shipped_design_with_long_names_loads():
    topology = load_topology(ROOT / "topologies" / "long-host-names.yaml")
    assert max(len(h.name) for h in topology.hosts) > 15
    assert topology.hosts[0].name == "perimeter-firewall-01"
