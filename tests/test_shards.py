"""Sharding the conformance suite by topology, and joining the shards' reports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

CONFORMANCE = Path(__file__).resolve().parent.parent / "conformance"
sys.path.insert(0, str(CONFORMANCE))


def _load(name: str, path: Path):
    # By path: tests/ has a conftest.py of its own, which `import conftest` would find first.
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_conformance = _load("conformance_conftest", CONFORMANCE / "conftest.py")
in_shard, parse_shard = _conformance.in_shard, _conformance.parse_shard
from merge import merge  # noqa: E402

GROUPS = ["ah-vs-esp", "b", "c", "d", "e", "test_cli", "test_docker"]


def test_every_group_is_in_exactly_one_shard():
    shards = [in_shard(GROUPS, (k, 3)) for k in (1, 2, 3)]
    assert set().union(*shards) == set(GROUPS)
    assert sum(len(s) for s in shards) == len(GROUPS)
    assert in_shard(GROUPS, None) == set(GROUPS)


def test_shards_are_dealt_by_time_longest_first():
    seconds = {"test_host_kernel": 70, "ah-vs-esp": 15, "b": 8, "c": 7, "d": 6, "e": 5, "test_cli": 19}
    shards = [in_shard(list(seconds), (k, 2), seconds) for k in (1, 2)]
    assert set().union(*shards) == set(seconds) and not shards[0] & shards[1]
    # LPT: the 70 s group alone in one share, everything else in the other (60 s)
    assert {"test_host_kernel"} in shards
    # a group no figure knows still lands in exactly one share
    assert sum("new" in in_shard(["new", *seconds], (k, 2), seconds) for k in (1, 2)) == 1


def test_longest_groups_are_scheduled_first():
    durations = _conformance.durations
    order = durations.longest_first(["c", "a", "b", "a", "unknown"], {"a": 3, "b": 30, "c": 3})
    assert order == ["b", "unknown", "a", "c"]  # unknown: DEFAULT (10 s); ties by name


def test_durations_come_from_a_junit_file(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text('<testsuites><testsuite name="pytest">'
                     '<testcase name="test_expectation[x::fe-&gt;be:http[B1]]@x" time="7.5"/>'
                     '<testcase name="test_wire[x]@x" time="0.5"/>'
                     '<testcase name="test_docker_run@test_docker" time="20"/></testsuite></testsuites>')
    assert _conformance.durations.from_junit(junit) == {"test_docker": 20.0, "x": 8.0}


def test_shard_option_is_k_of_n():
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("0/2", "3/2", "x", "1/"):
        with pytest.raises(pytest.UsageError):
            parse_shard(bad)


def _shard(folder: Path, name: str, failures: int) -> Path:
    (folder / name / ".rows").mkdir(parents=True)
    (folder / name / name).mkdir()
    (folder / name / name / "report.html").write_text("report")
    (folder / name / "junit.xml").write_text(
        f'<testsuites><testsuite name="pytest" tests="2" failures="{failures}" errors="0">'
        f'<testcase name="{name}-case"/></testsuite></testsuites>')
    (folder / name / ".rows" / "all-gw0.json").write_text(
        '{"rows": [{"name": "%s", "description": "", "held": 2, "total": 2, "ok": %s, "kind": "verify", '
        '"link": "%s/report.html", "failed": []}], "tables": {}}' % (name, "false" if failures else "true", name))
    return folder / name


def test_merge_joins_junit_index_and_reports(tmp_path):
    a, b = _shard(tmp_path, "one", 0), _shard(tmp_path, "two", 0)
    assert merge(tmp_path / "all", [a, b]) == 0
    junit = (tmp_path / "all" / "junit.xml").read_text()
    assert "one-case" in junit and "two-case" in junit
    index = (tmp_path / "all" / "index.html").read_text()
    assert "one/report.html" in index and "two/report.html" in index
    assert (tmp_path / "all" / "two" / "report.html").exists()


def test_merge_fails_on_a_failed_or_missing_shard(tmp_path):
    a, b = _shard(tmp_path, "one", 1), _shard(tmp_path, "two", 0)
    assert merge(tmp_path / "all", [a, b]) == 1
    (b / "junit.xml").unlink()
    assert merge(tmp_path / "all2", [_shard(tmp_path, "three", 0), b]) == 1
