"""Judging a run: every expectation gets a verdict, even one whose probe came back with nothing."""

from __future__ import annotations

from pathlib import Path

from lab.compile.plan import build_plan
from lab.contract import Results
from lab.model.load import load_topology
from lab.runner import judge_run
from lab.verdicts.model import Inconclusive

DATA = Path(__file__).parent / "data"


def _outcome(probe: dict) -> dict:
    return {"id": probe["id"], "delivered": False, "error": "timed out", "sport": 40000,
            "t_start": 1000.0, "t_end": 1010.0, "t_reply": None}


def test_a_probe_without_an_outcome_is_a_failed_verdict_naming_its_expectation(tmp_path):
    topology = load_topology(DATA / "good.yaml")
    plan = build_plan(topology, "r1", str(tmp_path))
    first, second, third = plan.probes
    results = Results.from_json({"run_id": "r1", "probes": [_outcome(first), _outcome(third)],
                                 "errors": ["probe thread died"]}, "test")
    report = judge_run(topology, plan, results, str(tmp_path))
    assert len(report.verdicts) == len(topology.expectations) == 3
    missing = report.verdicts[1]
    assert missing.id == "cl->fe:http" and missing.observed is Inconclusive.NOT_JUDGED and not missing.ok
    assert missing.line == topology.expectations[1].where.line
    assert f"no outcome for probe {second['id']} (cl->fe:http, line {missing.line})" in missing.reason
    assert "probe thread died" in missing.reason
    assert not report.ok and missing in report.failed
    # The others are judged from their own outcomes, matched by id (not by position).
    assert report.verdicts[2].id == "cl->be:tcp/8080" and report.verdicts[2].observed == "dropped"


def test_outcomes_are_matched_by_probe_id_whatever_their_order(tmp_path):
    topology = load_topology(DATA / "good.yaml")
    plan = build_plan(topology, "r1", str(tmp_path))
    results = Results.from_json({"run_id": "r1", "probes": [_outcome(p) for p in reversed(plan.probes)]}, "test")
    report = judge_run(topology, plan, results, str(tmp_path))
    assert [v.id for v in report.verdicts] == [e.id for e in topology.expectations]
    assert all(v.observed == "dropped" for v in report.verdicts)


def test_the_judging_modules_are_imported_in_the_background_once_started():
    import sys
    from lab import runner

    pre = runner.Preload(("json.tool", "lab.no_such_module", "calendar"))
    pre.join()  # never started: nothing to wait for
    pre.start()
    pre.start()  # once only
    pre.join()
    assert "json.tool" in sys.modules and not pre.thread.is_alive()
    # a module that cannot be imported stops the preload quietly: the main thread's import reports it


def test_the_guest_starts_before_scapy_is_imported():
    import subprocess
    import sys

    code = "import lab.runner, lab.cli, sys; print('scapy' in sys.modules, 'lab.report' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
