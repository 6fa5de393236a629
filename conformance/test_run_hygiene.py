"""What every run must also guarantee: evidence for B14, no leaked key, nothing left behind."""

from __future__ import annotations

import json
from ipaddress import ip_network
from pathlib import Path

from conftest import REPORTS

import pytest
import testinfra

from lab import cleanup
from lab.model.load import load_topology
from lab.model.topology import Result

# This machine, read through testinfra (ps, ip), not through lab.cleanup's own /proc reading:
# a second opinion on what a run leaves here, as tcpdump is on the verdicts.
HOST = testinfra.get_host("local://")

PROTECTED = (Result.ESP, Result.AH, Result.AH_ESP)


def test_sas_listed_for_protected_flows(topology_path, lab_runs):
    """B14: every flow judged esp or ah is backed by an installed SA that carried bytes."""
    report = lab_runs.get(topology_path)
    for v in report.verdicts:
        if v.observed in PROTECTED:
            assert v.evidence.sa is not None, f"{v.id}: protected on the wire but no SA found in list-sas"
            rows = [r for r in report.sas if r.host == v.evidence.sa.host and r.spi_in == v.evidence.sa.spi_in]
            assert rows and rows[0].state == "INSTALLED" and rows[0].bytes_out + rows[0].bytes_in > 0, \
                f"{v.id}: SA {v.evidence.sa.child} on {v.evidence.sa.host} carried no bytes"


def test_credentials_readable_exactly_when_not_encrypted(topology_path, lab_runs):
    """B2: the fake login a probe carries is readable on the wire under AH, under ESP with the
    null cipher and in clear, never under ESP that encrypts. Checked for every delivered flow of
    every topology."""
    report = lab_runs.get(topology_path)
    for v in report.verdicts:
        sa = v.evidence.sa
        null_cipher = sa is not None and sa.protocol == "ESP" and sa.algorithms.startswith("NULL")
        if v.observed is Result.ESP and not v.evidence.clear_packets and not null_cipher:
            assert not v.evidence.credential_in_clear, f"{v.id}: ESP, yet the credential was readable"
        if (v.observed in (Result.AH, Result.AH_ESP, Result.CLEAR) or (v.observed is Result.ESP and null_cipher)) \
                and v.evidence.delivered:
            assert v.evidence.credential_in_clear, f"{v.id}: {v.observed}, yet the credential was not found"


def test_no_secret_in_report(topology_path, lab_runs):
    report = lab_runs.get(topology_path)
    psk = lab_runs.psk[topology_path].encode()
    folder = REPORTS / Path(topology_path).stem
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files, f"no report written in {folder}"
    leaking = [str(p) for p in files if psk in p.read_bytes()]
    assert not leaking, f"the preshared key appears in {leaking}"
    assert not any(psk.decode() in line for line in lab_runs.output[topology_path])
    # Private keys (authentication: certificates): no PEM private key block anywhere, and none
    # of this run's key material (PEM, its base64 lines, DER, the private scalar raw or in hex).
    pki = lab_runs.pki.get(topology_path)
    material = pki.secret_material() if pki else []
    for p in files:
        data = p.read_bytes()
        assert b"PRIVATE KEY-----" not in data, f"a PEM private key block appears in {p}"
        assert not any(m in data for m in material), f"a host's private key appears in {p}"
    output = "\n".join(lab_runs.output[topology_path]).encode()
    assert b"PRIVATE KEY" not in output and not any(m in output for m in material if m.isascii())
    # The real servers' login passwords (fresh per run): blanked in captures and logs.
    for secret in lab_runs.server_secrets.get(topology_path, []):
        assert not any(secret in p.read_bytes() for p in files), "a real server's password appears in the report"
        assert secret not in output
    if pki:  # the public parts are kept: the CA, every machine certificate and the CRL
        assert {"ca.pem", "crl.pem", *(f"{h}.pem" for h in pki.certs)} <= {p.name for p in (folder / "certs").iterdir()}
    assert report.run_id


def test_nothing_left_behind(topology_path, lab_runs):
    report = lab_runs.get(topology_path)
    # Files and processes: on this host, where the run made them (the guest too is a process).
    assert not (cleanup.state_dir() / report.run_id).exists(), "run directory left behind"
    assert not cleanup.processes_of({report.run_id}), "processes of the run still alive"
    # Namespaces: in the lab kernel, where they were made. A UML guest's /run/netns is its own
    # tmpfs, invisible from here, so the executor lists what is left once teardown is over.
    executor = json.loads((REPORTS / Path(topology_path).stem / "executor.json").read_text())
    assert "namespaces_left" in executor, "the executor did not record its namespaces at teardown"
    assert executor["namespaces_left"] == [], f"namespaces left in the lab kernel: {executor['namespaces_left']}"
    assert not cleanup.namespaces_of({report.run_id}), "namespaces of the run left on this host"


def _network_of_this_machine() -> set[str]:
    """Every address on this machine's interfaces and every route it has, as text."""
    found = {f"{name}: {a}" for name in HOST.interface.names() for a in HOST.interface(name).addresses}
    routes = json.loads(HOST.check_output("ip -j route show table all"))
    return found | {f"route {r['dst']}" for r in routes if r.get("dst") not in (None, "default")}


# At collection, before any lab of this session runs (a user's own LAN may overlap a design's
# subnets: only what appears during the session can be the lab's).
BEFORE = _network_of_this_machine()


def _in_lab(item: str, subnets) -> bool:
    prefix = item.split()[-1]
    try:
        return any(ip_network(prefix, strict=False).overlaps(s) for s in subnets)
    except ValueError:  # an IPv6 link-local with a zone, and the like: not a lab address
        return False


def test_this_machine_is_as_it_was(topology_path, lab_runs):
    """The facts on this machine after the run, read by testinfra: no process of the run (the
    guest is one; ps's command lines, beside lab.cleanup's /proc environments) and no lab
    address or route here (lab addresses live only in the lab kernel's namespaces: never routed
    from the host). The run directory is test_nothing_left_behind's: the same stat either way."""
    report = lab_runs.get(topology_path)
    tag = f"umid=lab-{report.run_id}"
    assert not [p.pid for p in HOST.process.filter() if tag in p.args], "a process of the run is still alive"
    subnets = [n.subnet for n in load_topology(topology_path).networks]
    added = sorted(i for i in _network_of_this_machine() - BEFORE if _in_lab(i, subnets))
    assert not added, f"lab addresses on this machine: {', '.join(added)}"
