"""Conformance: every expectation of every topology in topologies/ is its own pytest case.

One live lab per topology, shared by its cases (the first case that needs it runs it). The
lab runs on a kernel with ESP/AH: the host's if it has them, otherwise a UML guest; these
cases never skip. LAB_TOPOLOGIES=glob narrows the set; LAB_KERNEL picks the kernel;
LAB_PROVIDER=docker runs every host as a container (see test_docker.py).
"""

from __future__ import annotations

import glob
import os
import secrets
from pathlib import Path

import pytest

from lab import runner
from lab.model.load import load_topology
from lab.pki import build_pki

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports" / "conformance"


def topology_files() -> list[str]:
    pattern = os.environ.get("LAB_TOPOLOGIES", str(ROOT / "topologies" / "*.yaml"))
    return sorted(glob.glob(pattern))


class LabRuns:
    """Runs each topology at most once per session and remembers what it concluded."""

    def __init__(self):
        self.reports: dict[str, object] = {}
        self.psk: dict[str, str] = {}
        self.pki: dict[str, object] = {}  # the lab CA of each certificates topology (its keys)
        self.output: dict[str, list[str]] = {}
        self.failovers: dict[str, list] = {}  # topology path -> FailoverResults, for the index
        self.server_secrets: dict[str, list[bytes]] = {}  # real servers' passwords, per topology

    def get(self, path: str):
        if path not in self.reports:
            self.psk[path] = "conformance-" + secrets.token_urlsafe(18)
            topo = load_topology(path)
            if topo.auth_method == "certificates":  # made here, so the test knows the keys
                self.pki[path] = build_pki(topo)
            lines = self.output.setdefault(path, [])
            report_dir = REPORTS / Path(path).stem
            try:
                result = runner.run(path, str(report_dir), kernel=os.environ.get("LAB_KERNEL", "auto"),
                                    on_progress=lambda e: lines.append(f"{e.get('phase')}: {e.get('message')}"),
                                    psk=self.psk[path], provider=os.environ.get("LAB_PROVIDER", "netns"),
                                    pki=self.pki.get(path),
                                    secret_sink=self.server_secrets.setdefault(path, []))
            except Exception as exc:  # noqa: BLE001  every case of this topology fails with the same reason
                result = exc
            else:
                from lab import report as reports
                reports.write_all(result, str(report_dir))
            self.reports[path] = result
        result = self.reports[path]
        if isinstance(result, Exception):
            pytest.fail(f"the lab could not run {path}: {result}", pytrace=False)
        return result


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run scenarios marked slow (full-length Windows timers)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: full-length Windows timers (minutes); run with --run-slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    keep = [i for i in items if "slow" not in i.keywords]
    deselected = [i for i in items if "slow" in i.keywords]
    if deselected:  # deselected, not skipped: they are run on request
        config.hook.pytest_deselected(items=deselected)
        items[:] = keep


@pytest.fixture(scope="session")
def lab_runs() -> LabRuns:
    return LabRuns()


def pytest_generate_tests(metafunc):
    if "expectation_case" in metafunc.fixturenames:
        params, ids = [], []
        for path in topology_files():
            topo = load_topology(path)
            for exp in topo.expectations:
                params.append((path, exp.id))
                tags = f"[{','.join(exp.behaviours)}]" if exp.behaviours else ""
                ids.append(f"{topo.name}::{exp.id}{tags}")
        metafunc.parametrize("expectation_case", params, ids=ids)
    if "failover_case" in metafunc.fixturenames:
        params = []
        for path in topology_files():
            topo = load_topology(path)
            for f in topo.failovers:
                marks = [pytest.mark.slow] if f.slow else []
                params.append(pytest.param((path, f.name), id=f"{topo.name}::failover:{f.name}[B9]", marks=marks))
        metafunc.parametrize("failover_case", params)
    if "topology_path" in metafunc.fixturenames:
        # Checks on a verify run: only topologies that have flows to verify (the failover-only
        # ones are covered by their failover cases).
        paths = [p for p in topology_files() if load_topology(p).expectations]
        metafunc.parametrize("topology_path", paths, ids=[Path(p).stem for p in paths])


def write_conformance_index(runs: LabRuns) -> str | None:
    """reports/conformance/index.html: every topology's result, linking its own report."""
    from lab.report.index import write_index

    rows = []
    for path, result in runs.reports.items():
        stem = Path(path).stem
        if isinstance(result, Exception):
            rows.append({"name": stem, "description": "", "held": 0, "total": 0, "ok": False, "kind": "verify",
                         "link": f"{stem}/report.html", "failed": [f"the lab could not run: {result}"]})
            continue
        held = sum(v.ok for v in result.verdicts)
        rows.append({"name": result.topology, "description": result.description, "held": held,
                     "total": len(result.verdicts), "ok": result.ok, "kind": "verify", "link": f"{stem}/report.html",
                     "failed": [f"{v.id}: expected {v.expected}, observed {v.observed}" for v in result.failed]})
    for path, results in runs.failovers.items():
        stem = Path(path).stem
        rows.append({"name": stem, "description": "; ".join(f"{r.name}: outage {r.outage:.2f} s" if r.outage
                                                             else f"{r.name}: no recovery" for r in results),
                     "held": sum(r.ok for r in results), "total": len(results), "ok": all(r.ok for r in results),
                     "kind": "failover", "link": f"{stem}/failover/failover.html",
                     "failed": [f"{r.name}: {r.reason}" for r in results if not r.ok]})
    return write_index(rows, str(REPORTS / "index.html")) if rows else None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Show each topology's verdicts the way `lab verify` does, under pytest's own summary."""
    runs = getattr(config, "_lab_runs", None)
    if not runs:
        return
    index = write_conformance_index(runs)
    from rich.console import Console

    from lab.report.table import print_sas, print_summary, print_verdicts

    console = Console(file=terminalreporter._tw._file, width=120, force_terminal=False)
    for path, result in runs.reports.items():
        if isinstance(result, Exception):
            continue
        console.rule(f"{result.topology}  ({path})")
        print_verdicts(result, console)
        print_sas(result, console)
        print_summary(result, console)
        console.print(f"report: {REPORTS / Path(path).stem / 'report.html'}", highlight=False)
    if index:
        console.print(f"all reports: {index}", highlight=False)


@pytest.fixture(scope="session", autouse=True)
def _expose_runs(request, lab_runs):
    request.config._lab_runs = lab_runs
