"""Host-side preparation of the real servers and clients (lab.services): configs rendered,
secrets only in the secrets part, never in the plan."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lab.compile.plan import build_plan
from lab.errors import TopologyError
from lab.model.load import load_topology
from lab.services import prepare as P

TOPOLOGIES = Path(__file__).resolve().parents[1] / "topologies"


def _prepared(tmp_path, name="exchange-ssl-fe-real"):
    topology = load_topology(TOPOLOGIES / f"{name}.yaml")
    plan = build_plan(topology, "t1", str(tmp_path / "out"))
    servers = P.prepare(topology, plan, str(tmp_path / "run"))
    return topology, plan, servers


def test_front_end_proxies_tls_to_back_end_and_refuses_plain_http(tmp_path):
    _t, plan, servers = _prepared(tmp_path)
    conf = (tmp_path / "run/servers/fe/nginx.conf").read_text()
    assert "listen 443 ssl" in conf and "proxy_pass http://10.10.2.20:80" in conf
    assert 'return 403 "403.4 SSL required' in conf
    assert "@ROOT@/run/nginx.pid" in conf  # pid, logs and temp files on the guest's tmpfs
    be = (tmp_path / "run/servers/be/nginx.conf").read_text()
    assert "auth_basic_user_file @ROOT@/htpasswd" in be
    fe = next(h for h in plan.hosts if h["name"] == "fe")
    assert fe["servers"]["ports"] == [["tcp", 80], ["tcp", 443]]
    assert fe["listeners"] == []  # nginx replaces the lab's listeners on 80 and 443
    assert fe["servers"]["secret_files"] == ["tls/key.pem"]
    assert not (tmp_path / "run/servers/fe/tls/key.pem").exists()
    assert "PRIVATE KEY" in servers.files["fe/tls/key.pem"]


def test_no_password_or_key_in_the_plan_or_rendered_files(tmp_path):
    _t, plan, servers = _prepared(tmp_path)
    text = json.dumps(plan.to_json())
    assert servers.passwords and "PRIVATE KEY" not in text
    for pw in servers.passwords.values():
        assert pw not in text
        for f in (tmp_path / "run").rglob("*"):
            if f.is_file():
                assert pw.encode() not in f.read_bytes(), f
    secret = servers.secret()["servers"]
    assert set(secret["passwords"]) == set(servers.passwords)


def test_real_clients_and_the_proxied_leg(tmp_path):
    _t, plan, servers = _prepared(tmp_path)
    probes = {p["expectation"]: p for p in plan.probes}
    https = probes["client->fe:https"]
    assert https["client"]["kind"] == "curl" and "--cacert" in https["client"]["argv"]
    assert "BEGIN CERTIFICATE" in https["client"]["files"]["ca.pem"]
    leg = probes["fe->be:http@proxy-of-client"]
    assert leg["proxied"]["of"] == https["id"]
    restored = {p.expectation: p for p in servers.with_credentials(plan).probes}
    https, leg = restored["client->fe:https"], restored["fe->be:http@proxy-of-client"]
    assert leg["credential_on_wire"] == https["credential_on_wire"] != https["marker"]


def test_domain_controller_kdc_and_slapd_from_the_cache(tmp_path, monkeypatch):
    if not shutil.which("kdb5_util") or not shutil.which("slapadd"):
        pytest.skip("krb5-kdc / slapd not installed (make setup)")
    monkeypatch.setattr(P, "CACHE", tmp_path / "cache")
    _t, plan, _servers = _prepared(tmp_path, "kb821839-c-real")
    dc = next(h for h in plan.hosts if h["name"] == "dc")
    assert {d["name"] for d in dc["servers"]["daemons"]} == {"krb5kdc", "slapd"}
    assert dc["servers"]["ports"] == [["tcp", 88], ["tcp", 389], ["tcp", 3268], ["udp", 88]]
    root = tmp_path / "run/servers/dc"
    assert (root / "kdc/principal").exists() and (root / "ldap/db/data.mdb").exists()
    assert "database_name = @ROOT@/kdc/principal" in (root / "kdc/kdc.conf").read_text()
    assert (tmp_path / "cache" / P.cache_key() / "ready").exists()


def test_scrub_blanks_passwords_keeping_lengths(tmp_path):
    _t, _plan, servers = _prepared(tmp_path)
    pw = next(iter(servers.passwords.values()))
    f = tmp_path / "capture.pcap"
    f.write_bytes(b"\x00head" + pw.encode() + b"tail")
    servers.scrub(tmp_path)
    data = f.read_bytes()
    assert pw.encode() not in data and len(data) == len(pw) + 9


def test_loader_checks_real_clients_and_proxies(tmp_path):
    src = (TOPOLOGIES / "exchange-ssl-fe-real.yaml").read_text()
    bad = src.replace("servers: real                            # nginx", "# nginx") \
             .replace("proxy_to: be,", "proxy_to: legacy,")
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    with pytest.raises(TopologyError) as e:
        load_topology(path)
    text = "\n".join(e.value.problems)
    assert "a real client needs a real server" in text
    assert "fe does not proxy to be" in text
