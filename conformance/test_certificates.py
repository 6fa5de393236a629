"""Certificates (B11) and IPsec-restricted publishing (B13), beyond each expectation's verdict.

- A negotiation refused because of a revoked certificate says so: the verdict's IKE reasons
  carry charon's "certificate was revoked" line.
- A published endpoint that requires IPsec never answers a client without it: no packet of
  the flow comes back in clear (no SYN-ACK), as the captures show.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPORTS, topology, topology_files

from lab.model.load import load_topology
from lab.verdicts.wire import read_capture

CERT_TOPOLOGIES = [p for p in topology_files() if topology(p).auth_method == "certificates"]


@pytest.mark.parametrize("path", CERT_TOPOLOGIES, ids=[Path(p).stem for p in CERT_TOPOLOGIES])
def test_revoked_certificate_refused_with_the_reason(path, lab_runs):
    """B11: an expected IKE failure involving a revoked host names the revocation."""
    topo, report = load_topology(path), lab_runs.get(path)
    verdicts = {v.id: v for v in report.verdicts}
    checked = 0
    for exp in topo.expectations:
        ends = (topo.host(exp.source), topo.host(exp.destination))
        if exp.ike != "failed" or not any(h.certificate == "revoked" for h in ends):
            continue
        reasons = verdicts[exp.id].evidence.ike_reasons
        assert any("certificate was revoked" in r for r in reasons), f"{exp.id}: reasons {reasons}"
        assert any("AUTHENTICATION_FAILED" in r for r in reasons), f"{exp.id}: reasons {reasons}"
        checked += 1
    if any(h.certificate == "revoked" for h in topo.hosts):
        assert checked, "a revoked host, but no expected IKE failure to check"


@pytest.mark.parametrize("path", CERT_TOPOLOGIES, ids=[Path(p).stem for p in CERT_TOPOLOGIES])
def test_restricted_endpoint_never_answers_in_clear(path, lab_runs):
    """B13: for every dropped flow to a host that requires IPsec for it, the captures hold no
    packet of the flow from that host: not even a SYN-ACK, so no TCP connection ever opens."""
    topo, report = load_topology(path), lab_runs.get(path)
    folder = REPORTS / Path(path).stem / "captures"
    packets = [p for f in sorted(folder.glob("*.pcap")) for p in read_capture(f.stem, str(f))]
    flows = 0
    for exp, v in zip(topo.expectations, report.verdicts):
        if "B13" not in exp.behaviours or exp.result.value != "dropped":
            continue
        proto, src, _, dst = v.evidence.flow.split()  # "tcp 203.0.113.22:40000 -> 10.20.1.10:443"
        (caddr, cport), (saddr, sport) = (x.rsplit(":", 1) for x in (src, dst))
        answers = [p for p in packets if p.kind == "clear" and p.src == saddr and p.dst == caddr
                   and p.sport == int(sport) and p.dport == int(cport)]
        assert not answers, f"{exp.id}: {len(answers)} packets came back in clear"
        flows += 1
    if any("B13" in e.behaviours for e in topo.expectations):
        assert flows, "B13 topology without a dropped flow to check"
