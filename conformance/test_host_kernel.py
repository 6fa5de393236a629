"""The host-kernel path (`--kernel host`), the one most users take, proven on every change.

These machines' kernel has no ESP/AH, so a User-Mode Linux guest plays an ESP-capable Linux host
(lab.hostsim): inside it `lab doctor` must choose the host kernel and say why, and `lab verify
--kernel host` must run the default design with namespaces and with containers (the guest's own
dockerd, started by the lab as on any Docker host), with the same verdicts as everywhere else.
Nothing here skips: a machine whose kernel has ESP/AH runs the same guest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import hostsim
from lab.model.load import load_topology

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "topologies" / "exchange-fe-be-http.yaml"
REPORTS = ROOT / "reports" / "conformance" / "host-kernel"


def _lab_in_guest(name: str, commands: list[list[str]], docker: bool = False) -> list[tuple[int | None, str]]:
    out = REPORTS / name
    out.mkdir(parents=True, exist_ok=True)
    files = [str(out / f"{i}-{c[0]}.txt") for i, c in enumerate(commands)]
    codes = hostsim.run(list(zip(commands, files)), docker=docker)
    return [(rc, Path(f).read_text(errors="replace") if Path(f).exists() else "") for rc, f in zip(codes, files)]


@pytest.fixture(scope="module")
def host_guest():
    """One guest for all three: `lab doctor`, the default design with namespaces, then with
    containers. The Docker host's cgroups and overlayfs are nothing the namespaces use; a guest
    each cost the suite's longest group a second boot and inner lab start (13.6 s)."""
    netns, docker = REPORTS / "netns", REPORTS / "docker"
    results = _lab_in_guest("host", [["doctor"], ["verify", "--kernel", "host", str(DEFAULT), "--report", str(netns)],
                                     ["verify", "--kernel", "host", "--provider", "docker", str(DEFAULT),
                                      "--report", str(docker)]], docker=True)
    return results, netns, docker


@pytest.fixture(scope="module")
def netns_host(host_guest):
    """`lab doctor`, then the default design with namespaces on the guest's kernel."""
    results, netns, _ = host_guest
    return results[:2], netns


@pytest.fixture(scope="module")
def docker_host(host_guest):
    results, _, docker = host_guest
    return results[2], docker


def _assert_verified(rc, output: str, report: Path) -> dict:
    __tracebackhide__ = True
    assert rc == 0, f"lab verify --kernel host exited {rc}:\n{output[-3000:]}"
    result = json.loads((report / "result.json").read_text())
    assert result["kernel"].startswith("host kernel"), result["kernel"]
    assert result["timings"]["guest_boot"] == 0, "the host-kernel path must not boot a guest of its own"
    want = {e.id: e.result for e in load_topology(str(DEFAULT)).expectations}
    got = {v["id"]: v["observed"] for v in result["verdicts"]}
    assert got == want
    assert not result["errors"], result["errors"]
    # The protected flow is ESP on the wire, with an SA of the inner kernel behind it.
    assert any(s["protocol"] == "ESP" for s in result["sas"]), result["sas"]
    return result


def test_doctor_chooses_the_host_kernel_and_says_why(netns_host):
    [(rc, text), _] = netns_host[0]
    assert rc == 0, text
    assert "kernel: host kernel" in text, text
    assert "why: this kernel accepted a test ESP and AH SA" in text, text


def test_verify_on_the_host_kernel_with_namespaces(netns_host):
    [_, (rc, text)] = netns_host[0]
    _assert_verified(rc, text, netns_host[1])


def test_verify_on_the_host_kernel_with_containers(docker_host):
    (rc, text), report = docker_host
    _assert_verified(rc, text, report)
    raw = json.loads((report / "executor.json").read_text())
    for host, c in raw["host_checks"].items():
        assert "error" not in c and c["charon_running"] and c["ike_listening"], (host, c)
    assert len(raw["docker"]["removed"]) == len(load_topology(str(DEFAULT)).hosts)


def test_the_guest_wrote_nothing_outside_its_reports(netns_host, docker_host):
    """The inner lab kept its run directories on the guest's tmpfs and dockerd its key on tmpfs."""
    assert not Path(hostsim.GUEST_STATE).exists()
    assert not Path("/etc/docker/key.json").exists()
