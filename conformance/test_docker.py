"""The Docker provider on the default topology: same verdicts, host state, nothing left behind.

The containers run in the lab kernel's private dockerd (inside the UML guest on machines whose
kernel has no ESP/AH) and are gone with it before these asserts run, so nothing here can reach
them. The executor reads each IPsec host's container from the lab kernel's /proc (the
processes of its PID namespace, UDP 500 in its network namespace, its VICI socket) and asks
dockerd for each container's state, and records the results in results.json (executor.json in
the report); these cases check them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from interrupt import interrupt_when
from wirecheck import check_report

from lab import cleanup, runner
from lab.model.load import load_topology
from lab.model.topology import Result

PROTECTED = (Result.ESP, Result.AH, Result.AH_ESP)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "topologies" / "exchange-fe-be-http.yaml"
REPORT = ROOT / "reports" / "conformance" / "docker-exchange-fe-be-http"


@pytest.fixture(scope="module")
def docker_run():
    result = runner.run(str(DEFAULT), str(REPORT), kernel=os.environ.get("LAB_KERNEL", "auto"),
                        provider="docker")
    from lab import report as reports
    reports.write_all(result, str(REPORT))
    return result, json.loads((REPORT / "executor.json").read_text())


def test_every_expectation_holds_with_containers(docker_run):
    report, _ = docker_run
    assert not report.errors, report.errors
    topo = load_topology(str(DEFAULT))
    assert {v.id for v in report.verdicts} == {e.id for e in topo.expectations}
    bad = [f"{v.id}: expected {v.expected_text}, observed {v.observed_text}: {v.reason}"
           for v in report.verdicts if not v.ok]
    assert not bad, bad
    problems = check_report(report, REPORT)  # read again by tcpdump, not by the lab's classifier
    assert not problems, "tcpdump disagrees with the lab:\n" + "\n".join(problems)


def test_charon_runs_in_each_ipsec_container_with_its_vici_socket(docker_run):
    report, raw = docker_run
    checks = raw["host_checks"]
    ipsec = [h.name for h in load_topology(str(DEFAULT)).ipsec_hosts]
    assert sorted(checks) == sorted(ipsec)
    for host, c in checks.items():
        assert "error" not in c, f"{host}: {c.get('error')}"
        assert c["container"] == f"lab-{report.run_id}-{host}"
        assert c["charon_running"], f"{host}: no charon process in its container"
        assert c["vici_socket"], f"{host}: no VICI socket in its container"
        assert c["ike_listening"], f"{host}: charon does not listen on udp/500"
        assert c["docker_status"] == "running", f"{host}: dockerd says {c['docker_status']}"
    # The protected flow's SA pair is in the kernel of both ends, seen from their containers.
    for v in report.verdicts:
        if v.observed in PROTECTED:
            for end in (v.source, v.destination):
                assert checks[end]["xfrm_states"] >= 2, f"{end}: no XFRM SA pair for {v.id}"


def test_containers_and_dockerd_are_removed(docker_run):
    report, raw = docker_run
    docker = raw["docker"]
    ipsec_and_others = {h.name for h in load_topology(str(DEFAULT)).hosts}
    assert sorted(docker["removed"]) == sorted(f"lab-{report.run_id}-{h}" for h in ipsec_and_others)
    assert "dockerd.log" in {p.name for p in (REPORT / "logs").iterdir()}
    assert not cleanup.processes_of({report.run_id})
    assert not (cleanup.state_dir() / report.run_id).exists()
    # The guest's dockerd wrote nowhere on the host outside the run (its key.json went to tmpfs).
    assert not Path("/etc/docker/key.json").exists()


def test_ctrl_c_with_containers_leaves_nothing(tmp_path):
    interrupt_when(["verify", str(DEFAULT), "--provider", "docker", "--report", str(tmp_path / "r")],
                   marker="containers started")  # once the containers are up
    assert not Path("/etc/docker/key.json").exists()


def _real_server_topologies() -> list[str]:
    """With LAB_PROVIDER=docker (tox -e lab-docker): every topology with real servers."""
    if os.environ.get("LAB_PROVIDER") != "docker":
        return []
    from conftest import topology, topology_files

    from lab.services.prepare import real_services
    return [p for p in topology_files() if any(real_services(h) for h in topology(p).hosts)]


if _real_server_topologies():  # defined only where it applies: a provider choice, not a skip
    @pytest.mark.parametrize("path", _real_server_topologies(), ids=lambda p: Path(p).stem)
    def test_real_servers_run_inside_their_role_containers(path, lab_runs):
        from conftest import REPORTS

        from lab import images
        from lab.services.prepare import real_services

        report = lab_runs.get(path)
        raw = json.loads((REPORTS / Path(path).stem / "executor.json").read_text())
        for h in load_topology(path).hosts:
            daemons = set(real_services(h).values())
            if not daemons:
                continue
            assert raw["docker"]["images"][h.name] == images.tag(daemons=tuple(daemons)), h.name
            seen = raw["host_checks"][h.name]
            assert "error" not in seen, seen
            # nginx shows as nginx, krb5kdc as krb5kdc, ...: the daemon is a process of the container
            missing = daemons - set(seen["processes"])
            assert not missing, f"{h.name}: {sorted(missing)} not running in {seen['container']}: {seen['processes']}"
        assert not report.errors, report.errors
