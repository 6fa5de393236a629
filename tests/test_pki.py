"""The lab CA (lab/pki.py) and certificate authentication in the compiler and the plan."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from lab.compile.plan import build_plan
from lab.compile.strongswan import compile_host
from lab.model.load import load_topology
from lab.pki import build_pki
from lab.runner import keep_artifacts, write_inputs
from lab.kernels.base import RunFiles

ROOT = Path(__file__).resolve().parent.parent
PUBLISH = ROOT / "topologies" / "ipsec-restricted-publishing.yaml"
CERTS = ROOT / "topologies" / "exchange-fe-be-http-certificates.yaml"
PSK = ROOT / "topologies" / "exchange-fe-be-http.yaml"


@pytest.fixture(scope="module")
def publish():
    return load_topology(PUBLISH)


@pytest.fixture(scope="module")
def pki(publish):
    return build_pki(publish)


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def test_loader_defaults_and_states(publish):
    states = {h.name: h.certificate for h in publish.hosts}
    assert states == {"fw": "none", "edge": "valid", "roamer": "valid", "kiosk": "none",
                      "stolen": "revoked", "nocert": "none"}
    assert publish.auth_method == "certificates"


def test_ca_is_a_ca_and_signs_every_machine_certificate(pki):
    ca = _cert(pki.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    for host, pem in pki.certs.items():
        cert = _cert(pem)
        cert.verify_directly_issued_by(ca)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_one_certificate_per_ipsec_host_with_cn_and_san(publish, pki):
    # nocert: certificate none; kiosk and fw: no policy
    assert sorted(pki.certs) == sorted(pki.keys) == ["edge", "roamer", "stolen"]
    for name, pem in pki.certs.items():
        cert = _cert(pem)
        assert cert.subject.rfc4514_string() == f"CN={name}"
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.IPAddress) == [
            ipaddress.ip_address(str(a)) for a in publish.host(name).addresses]


def test_crl_signed_by_the_ca_lists_exactly_the_revoked_hosts(pki):
    ca = _cert(pki.ca_cert)
    crl = x509.load_pem_x509_crl(pki.crl.encode())
    assert crl.is_signature_valid(ca.public_key())
    assert crl.issuer == ca.subject
    listed = {r.serial_number for r in crl}
    assert listed == {_cert(pki.certs["stolen"]).serial_number}
    assert pki.revoked == ("stolen",)
    # strongSwan finds a CA's CRL by the authority key identifier
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_keys_match_their_certificates(pki):
    from cryptography.hazmat.primitives import serialization
    for host, pem in pki.keys.items():
        assert pem.startswith("-----BEGIN EC PRIVATE KEY-----")  # what charon's openssl plugin loads
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        assert key.public_key() == _cert(pki.certs[host]).public_key()


def test_every_run_gets_a_new_ca(publish, pki):
    assert build_pki(publish).ca_cert != pki.ca_cert


def test_pubkey_connections(publish):
    roamer = compile_host(publish, publish.host("roamer"))
    conn = roamer["peer-edge"]
    assert conn["local-1"] == {"auth": "pubkey", "id": "CN=roamer"}
    # the peer named in the filter must present its own certificate, checked against the CRL
    assert conn["remote-1"] == {"auth": "pubkey", "id": "CN=edge", "revocation": "strict"}
    assert conn["send_cert"] == "always"
    edge = compile_host(publish, publish.host("edge"))["peer-any"]
    assert edge["remote-1"] == {"auth": "pubkey", "id": "%any", "revocation": "strict"}
    assert edge["remote_addrs"] == ["%any"]
    # a rule answering any peer: one fixed reqid, so the trap and the SAs it answers agree
    child = edge["children"]["https-from-anyone"]
    assert child["reqid"] == child["priority"]
    assert "reqid" not in conn["children"]["to-edge-https"]
    topo = load_topology(CERTS)
    respond = compile_host(topo, topo.host("be"))["peer-any"]
    assert respond["local-1"] == {"auth": "pubkey", "id": "CN=be"}
    assert respond["remote-1"] == {"auth": "pubkey", "id": "%any", "revocation": "strict"}


def test_psk_connections_unchanged():
    topo = load_topology(PSK)
    conns = compile_host(topo, topo.host("fe"))
    assert conns["peer-be"]["local-1"] == {"auth": "psk", "id": "10.10.1.10"}
    assert conns["peer-be"]["remote-1"] == {"auth": "psk", "id": "10.10.2.20"}
    assert conns["peer-any"]["local-1"] == {"auth": "psk"}
    assert conns["peer-any"]["remote-1"] == {"auth": "psk", "id": "%any"}
    assert "send_cert" not in conns["peer-be"]


def test_no_private_key_in_the_plan_only_in_the_0600_secrets(tmp_path, publish, pki):
    files = RunFiles(str(tmp_path))
    plan = build_plan(publish, "abc123", files.outdir)
    plan.pki = pki.public()  # as the runner completes it, before freezing
    plan.freeze()
    write_inputs(files, plan, "k" * 24, pki)
    text = Path(files.plan).read_text()
    assert "PRIVATE KEY" not in text
    assert not any(m.decode(errors="ignore") in text for m in pki.secret_material() if m.isascii())
    assert json.loads(text)["pki"]["certs"]["edge"] == pki.certs["edge"]  # public parts travel
    assert (Path(files.secrets).stat().st_mode & 0o777) == 0o600
    secrets = json.loads(Path(files.secrets).read_text())
    assert secrets["keys"] == pki.keys and secrets["psk"] == "k" * 24


def test_report_keeps_public_certificates_and_scrubs_keys(tmp_path, pki):
    out, report = tmp_path / "out", tmp_path / "report"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "charon-edge.log").write_text("loaded\n" + pki.keys["edge"])
    kept = keep_artifacts(str(out), str(report), "some-psk-value", pki)
    kept.update(pki.write_public(report))
    assert "certs/ca.pem" in kept and "certs/crl.pem" in kept and "certs/stolen.pem" in kept
    for f in report.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert b"PRIVATE KEY" not in data, f
            assert not any(m in data for m in pki.secret_material()), f


def test_loader_certificate_value_and_psk_default(tmp_path):
    from lab.errors import TopologyError
    text = PUBLISH.read_text().replace("certificate: revoked ", "certificate: expired ")
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError) as err:
        load_topology(path)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "certificate: expired" in t)
    assert err.value.problems[0] == (f"{path}:{line}: hosts.stolen.certificate: must be one of "
                                     "valid, revoked, none (got 'expired')")
    topo = load_topology(PSK)  # psk: hosts with a policy still read valid; nothing is made
    assert topo.host("fe").certificate == "valid" and topo.host("legacy").certificate == "none"


def test_certificate_failure_reasons_from_charon_logs():
    from lab.verdicts.ike import failure_reasons
    responder = """\
13:45:35 10[NET] <1> received packet: from 10.10.1.10[500] to 10.10.2.20[500] (464 bytes)
13:45:35 09[CFG] <respond|1> certificate was revoked on Nov 27 12:45:33 UTC 2026, reason: key compromise
13:45:35 09[IKE] <respond|1> no trusted ECDSA public key found for 'CN=fe'
13:45:35 11[NET] <2> received packet: from 10.10.9.9[500] to 10.10.2.20[500] (464 bytes)
13:45:35 12[IKE] <respond|2> no trusted ECDSA public key found for 'CN=other'
"""
    # the IKE_SA's tag changes once a config is chosen; it stays tied to the peer that started it
    assert failure_reasons(responder, "10.10.1.10") == [
        "certificate was revoked on Nov 27 12:45:33 UTC 2026, reason: key compromise",
        "no trusted ECDSA public key found for 'CN=fe'"]
    initiator = """\
13:55:06 15[IKE] <rule-x|1> initiating Main Mode IKE_SA rule-x[1] to 10.10.2.20
13:55:06 07[IKE] <rule-x|1> received AUTHENTICATION_FAILED error notify
13:55:07 08[IKE] <rule-y|2> initiating IKE_SA rule-y[2] to 10.10.2.30
13:55:07 08[IKE] <rule-y|2> no private key found for 'CN=nocert'
"""
    assert failure_reasons(initiator, "10.10.2.20") == ["received AUTHENTICATION_FAILED error notify"]
    assert failure_reasons(initiator, "10.10.2.30") == ["no private key found for 'CN=nocert'"]
