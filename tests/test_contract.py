"""The host/guest contract: one plan, written once when complete, checked when read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.compile.plan import build_plan
from lab.contract import ContractError, Plan, Results, read_plan, read_results, write_plan, write_results
from lab.model.load import load_topology

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def plan(tmp_path):
    return build_plan(load_topology(str(ROOT / "topologies" / "exchange-fe-be-http.yaml")), "c1", str(tmp_path))


def test_a_frozen_plan_round_trips_and_cannot_change(plan, tmp_path):
    plan.freeze()
    write_plan(str(tmp_path / "plan.json"), plan)
    back = read_plan(str(tmp_path / "plan.json"))
    assert back.to_json() == plan.to_json()
    assert back.probes[0].id == "p1" and back.probes[0]["marker"] == plan.probes[0].marker
    with pytest.raises(AttributeError, match="frozen"):
        back.probes[0].timeout = 1
    with pytest.raises(AttributeError, match="frozen"):
        back.provider = "docker"


def test_the_plan_is_written_once_and_only_when_complete(plan, tmp_path):
    with pytest.raises(ContractError, match="frozen"):
        write_plan(str(tmp_path / "plan.json"), plan)
    plan.freeze()
    write_plan(str(tmp_path / "plan.json"), plan)
    with pytest.raises(FileExistsError):
        write_plan(str(tmp_path / "plan.json"), plan)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format=99), "plan format 99, this lab reads format 1"),
    (lambda d: d.pop("switch_ns"), "Plan: missing field(s) switch_ns"),
    (lambda d: d["probes"][1].update(colour="red"), "probes[1]: Probe: unknown field(s) colour"),
    (lambda d: d["hosts"][0].pop("ns"), "hosts[0]: HostPlan: missing field(s) ns"),
])
def test_a_plan_that_does_not_match_names_the_file_and_the_field(plan, tmp_path, change, message):
    raw = plan.to_json()
    change(raw)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ContractError) as exc:
        read_plan(str(path))
    assert str(exc.value).startswith(str(path)) and message in str(exc.value)


def test_results_keep_absent_what_a_run_did_not_produce_and_check_outcomes(tmp_path):
    r = Results(run_id="c1", errors=["x"])
    write_results(str(tmp_path / "results.json"), r)
    raw = json.loads((tmp_path / "results.json").read_text())
    assert "failover" not in raw and "host_checks" not in raw and raw["format"] == 1
    assert read_results(str(tmp_path / "results.json")).errors == ["x"]
    raw["probes"] = [{"id": "p1", "delivered": True}]
    (tmp_path / "results.json").write_text(json.dumps(raw))
    with pytest.raises(ContractError, match=r"probes\[0\]: Outcome: missing field\(s\) error, sport, t_end, t_reply, t_start"):
        read_results(str(tmp_path / "results.json"))


def test_outcomes_are_found_by_probe_id():
    outcome = {"id": "p2", "delivered": False, "error": "timed out", "sport": 1, "t_start": 1.0, "t_end": 2.0,
               "t_reply": None}
    r = Results.from_json({"run_id": "c1", "probes": [outcome]}, "here")
    assert r.outcome("p2").error == "timed out" and r.outcome("p1") is None


def test_the_contract_imports_only_the_standard_library():
    code = ("import sys; before = set(sys.modules); import lab.contract; "
            "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] not in sys.stdlib_module_names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "['lab', 'lab.contract']"


def test_plan_has_a_field_for_every_key_build_plan_writes(plan):
    assert set(plan.to_json()) == {f for f in Plan.__dataclass_fields__}
