"""The lab as a pytest plugin (entry point `pytest11: lab`), for a user's own repository:

    pytest --lab-topologies 'designs/*.yaml'                 one test per written expectation
    pytest --lab-topologies 'designs/*.yaml' --lab-matrix    plus one per predicted flow (lab predict)
    pytest ... --junitxml=reports/junit.xml                  JUnit, as any pytest run

Each topology runs once on a live lab (the first test that needs it starts it); its report goes
to `--lab-reports/<file stem>/`, and `index.html` there links them all. Test ids are those of
the project's own conformance suite: `<topology>::<from>-><to>:<service>[behaviours]`; matrix
tests are `<topology>::matrix::<from>-><to>:<service>`. The conformance suite uses the same
LabRuns, index and summary from here (conformance/conftest.py). Nothing happens unless
--lab-topologies is given or a test asks for the `lab_runs` fixture.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import secrets
from pathlib import Path

import pytest

from lab.model.load import load_topology


class LabRuns:
    """Runs each topology at most once per session and remembers what it concluded."""

    def __init__(self, reports: Path, matrix: bool = False):
        self.root = Path(reports)
        self.matrix = matrix  # run the whole predicted matrix, not only the written flows
        self.reports: dict[str, object] = {}
        self.psk: dict[str, str] = {}
        self.pki: dict[str, object] = {}  # the lab CA of each certificates topology (its keys)
        self.output: dict[str, list[str]] = {}
        self.failovers: dict[str, list] = {}  # topology path -> FailoverResults, for the index
        self.server_secrets: dict[str, list[bytes]] = {}  # real servers' passwords, per topology
        self.matrices: dict[str, list] = {}  # topology path -> MatrixRows (--lab-matrix)

    def report_dir(self, path: str) -> Path:
        return self.root / Path(path).stem

    def get(self, path: str):
        if path not in self.reports:
            self.reports[path] = self._run(path)
        result = self.reports[path]
        if isinstance(result, Exception):
            pytest.fail(f"the lab could not run {path}: {result}", pytrace=False)
        return result

    def _run(self, path: str):
        from lab import report as reports
        from lab import runner
        from lab.pki import build_pki

        self.psk[path] = "conformance-" + secrets.token_urlsafe(18)
        topo = load_topology(path)
        if topo.auth_method == "certificates":  # made here, so the tests know the keys
            self.pki[path] = build_pki(topo)
        lines = self.output.setdefault(path, [])

        def run_one(topology=None, report_dir=None):
            return runner.run(path, report_dir or str(self.report_dir(path)), kernel=os.environ.get("LAB_KERNEL", "auto"),
                              on_progress=lambda e: lines.append(f"{e.get('phase')}: {e.get('message')}"),
                              psk=self.psk[path], provider=os.environ.get("LAB_PROVIDER", "netns"),
                              pki=self.pki.get(path), secret_sink=self.server_secrets.setdefault(path, []),
                              topology=topology)
        try:
            if self.matrix:  # in waves; writes the combined report and matrix.json
                from lab.predict import live
                result, self.matrices[path] = live.run_matrix(topo, self.report_dir(path), run_one)
                return result
            result = run_one()
        except Exception as exc:  # noqa: BLE001  every case of this topology fails with the same reason
            return exc
        reports.write_all(result, str(self.report_dir(path)))
        return result

    def verdict(self, path: str, exp_id: str):
        report = self.get(path)
        assert not report.errors, f"the lab run reported errors: {report.errors}"
        verdict = next((v for v in report.verdicts if v.id == exp_id), None)
        assert verdict is not None, f"no verdict for {exp_id}: the probe never ran"
        return verdict


def expectation_id(topo, exp) -> str:
    tags = f"[{','.join(exp.behaviours)}]" if exp.behaviours else ""
    return f"{topo.name}::{exp.id}{tags}"


def check_expectation(runs: LabRuns, path: str, exp_id: str) -> None:
    """The written expectation holds on the wire (against what it says, also in a matrix run)."""
    __tracebackhide__ = True
    verdict = runs.verdict(path, exp_id)
    exp = next(e for e in load_topology(path).expectations if e.id == exp_id)
    if runs.matrix:  # the run judged the prediction: hold the observation to what was written
        verdict = dataclasses.replace(verdict, expected=exp.result, expected_ike=exp.ike)
    assert verdict.ok, (f"{path}:{verdict.line}: {exp_id}: expected {verdict.expected_text}, "
                        f"observed {verdict.observed_text}: {verdict.reason}")


def check_matrix_flow(runs: LabRuns, path: str, flow_id: str) -> None:
    __tracebackhide__ = True
    runs.get(path)
    row = next((r for r in runs.matrices.get(path, []) if r.id == flow_id), None)
    assert row is not None, f"no verdict for {flow_id}: the probe never ran"
    assert row.agrees, (f"{path}: {flow_id}: predicted {row.predicted}, observed {row.observed}; "
                        f"prediction: {row.why}; wire: {row.evidence}")


def index_rows(runs: LabRuns) -> list[dict]:
    """One row per topology this process ran, for index.html."""
    rows = []
    for path, result in runs.reports.items():
        stem = Path(path).stem
        if isinstance(result, Exception):
            rows.append({"name": stem, "description": "", "held": 0, "total": 0, "ok": False, "kind": "verify",
                         "link": f"{stem}/report.html", "failed": [f"the lab could not run: {result}"]})
            continue
        held = sum(v.ok for v in result.verdicts)
        rows.append({"name": result.topology, "description": result.description, "held": held,
                     "total": len(result.verdicts), "ok": result.ok, "kind": "matrix" if runs.matrix else "verify",
                     "link": f"{stem}/report.html",
                     "failed": [f"{v.id}: expected {v.expected_text}, observed {v.observed_text}" for v in result.failed]})
    for path, results in runs.failovers.items():
        stem = Path(path).stem
        rows.append({"name": stem, "description": "; ".join(f"{r.name}: outage {r.outage:.2f} s" if r.outage
                                                             else f"{r.name}: no recovery" for r in results),
                     "held": sum(r.ok for r in results), "total": len(results), "ok": all(r.ok for r in results),
                     "kind": "failover", "link": f"{stem}/failover/failover.html",
                     "failed": [f"{r.name}: {r.reason}" for r in results if not r.ok]})
    return rows


def tables_text(runs: LabRuns) -> dict[str, str]:
    """Each topology's verdicts the way `lab verify` shows them, as text, by file stem."""
    import io

    from rich.console import Console

    from lab.report.table import print_sas, print_summary, print_verdicts

    out = {}
    for path, result in runs.reports.items():
        if isinstance(result, Exception):
            continue
        buf = io.StringIO()
        console = Console(file=buf, width=120, force_terminal=False)
        console.rule(f"{result.topology}  ({path})")
        print_verdicts(result, console)
        print_sas(result, console)
        print_summary(result, console)
        console.print(f"report: {runs.report_dir(path) / 'report.html'}", highlight=False)
        out[Path(path).stem] = buf.getvalue()
    return out


# Every pytest process (each xdist worker, or the only one) leaves what it ran in <reports>/.rows;
# the controlling process joins them into one index.html and one summary; shards are joined by
# conformance/merge.py.
def collected_rows(folder: Path) -> tuple[list[dict], dict[str, str]]:
    rows, tables = [], {}
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        doc = json.loads(f.read_text())
        rows += doc["rows"]
        tables.update(doc["tables"])
    return sorted(rows, key=lambda r: (r["name"], r["kind"])), dict(sorted(tables.items()))


def write_index(root: Path) -> str | None:
    """index.html: every topology's result, linking its own report."""
    from lab.report.index import write_index as write

    rows, _ = collected_rows(root / ".rows")
    return write(rows, str(root / "index.html")) if rows else None


def _reports_root(config) -> Path:
    return Path(config.getoption("lab_reports") or "reports/lab")


def _process_name(config) -> str:
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    shard = (config.getoption("shard", None) or "all").replace("/", "of")
    return f"{shard}-{worker}"


def pytest_sessionfinish(session, exitstatus):
    runs = getattr(session.config, "_lab_runs", None)
    if runs and (runs.reports or runs.failovers):
        rows = runs.root / ".rows"
        rows.mkdir(parents=True, exist_ok=True)
        doc = {"rows": index_rows(runs), "tables": tables_text(runs)}
        (rows / f"{_process_name(session.config)}.json").write_text(json.dumps(doc))


# ---- the plugin's hooks ---------------------------------------------------------------------


def pytest_addoption(parser):
    group = parser.getgroup("lab", "IPsec policy lab")
    group.addoption("--lab-topologies", action="append", default=[], metavar="GLOB",
                    help="topology files to verify on a live lab, one test per written expectation")
    group.addoption("--lab-matrix", action="store_true",
                    help="also run every predicted flow (lab predict); a test per flow, prediction vs wire")
    group.addoption("--lab-reports", metavar="DIR", default=None,
                    help="where each topology's report and index.html go (default: reports/lab)")


def topology_globs(config) -> list[str]:
    return sorted({str(Path(p).resolve()) for g in config.getoption("lab_topologies") for p in glob.glob(g)})


def pytest_collect_file(file_path, parent):
    if file_path.suffix in (".yaml", ".yml") and str(file_path.resolve()) in topology_globs(parent.config):
        return TopologyFile.from_parent(parent, path=file_path)
    return None


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # the controlling process: a fresh set of rows
        rows = _reports_root(session.config) / ".rows"
        for f in rows.glob("*.json") if rows.is_dir() else []:
            f.unlink()
    missing = [g for g in session.config.getoption("lab_topologies") if not glob.glob(g)]
    if missing:
        raise pytest.UsageError(f"--lab-topologies: no file matches {', '.join(missing)}")


class TopologyFile(pytest.File):
    """A topology file given with --lab-topologies: its expectations (and matrix) as tests."""

    def collect(self):
        from lab.errors import TopologyError

        try:
            topo = load_topology(self.path)
        except TopologyError as exc:
            raise self.CollectError(str(exc)) from None
        path = str(self.path)
        for exp in topo.expectations:
            yield LabItem.from_parent(self, name=expectation_id(topo, exp), target=(path, exp.id, "written"))
        if self.config.getoption("lab_matrix"):
            from lab.predict.live import matrix_topology
            written = {e.id for e in topo.expectations}
            for exp in matrix_topology(topo)[0].expectations:
                if exp.id not in written:
                    yield LabItem.from_parent(self, name=f"{topo.name}::matrix::{exp.id}", target=(path, exp.id, "matrix"))


class LabItem(pytest.Item):
    def __init__(self, *, target, **kw):
        super().__init__(**kw)
        self.target = target

    def runtest(self):
        runs = self.config._lab_runs
        path, flow_id, kind = self.target
        (check_matrix_flow if kind == "matrix" else check_expectation)(runs, path, flow_id)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, (AssertionError, pytest.fail.Exception)):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.name


def _runs(config) -> LabRuns:
    if not hasattr(config, "_lab_runs"):
        reports = config.getoption("lab_reports") or "reports/lab"
        config._lab_runs = LabRuns(Path(reports), matrix=config.getoption("lab_matrix"))
    return config._lab_runs


def pytest_configure(config):
    if config.getoption("lab_topologies"):
        _runs(config)


@pytest.fixture(scope="session")
def lab_runs(request) -> LabRuns:
    return _runs(request.config)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Each topology's verdicts the way `lab verify` shows them, under pytest's own summary
    (from every worker's rows when pytest-xdist ran them)."""
    if hasattr(config, "workerinput"):
        return
    root = _reports_root(config)
    _, tables = collected_rows(root / ".rows")
    if not tables and not (root / ".rows").is_dir():
        return
    index = write_index(root)
    for text in tables.values():
        terminalreporter._tw.write(text)
    if index:
        terminalreporter._tw.line(f"all reports: {index}")
