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
