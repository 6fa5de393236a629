"""Goldens: the exact VICI load-conn dictionaries of every shipped topology, and the exact error
lines of every bad fixture, as `lab validate` prints them.

A change to either shows here as a diff to review. When the change is meant, regenerate and
read the diff before committing:  LAB_UPDATE_GOLDENS=1 .venv/bin/python -m pytest tests/test_goldens.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lab.cli import main
from lab.compile.strongswan import compile_host
from lab.model.load import load_topology

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("LAB_UPDATE_GOLDENS") == "1"
SHIPPED = sorted((ROOT / "topologies").glob("*.yaml"))
BAD = sorted((Path(__file__).parent / "data" / "bad").glob("*.yaml"))


def check(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden {path.relative_to(ROOT)}; run with LAB_UPDATE_GOLDENS=1"
    assert text == path.read_text(), f"{path.relative_to(ROOT)} differs (LAB_UPDATE_GOLDENS=1 to accept)"


@pytest.mark.parametrize("topology", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_load_conn_dictionaries(topology):
    topo = load_topology(str(topology))
    conns = {h.name: compile_host(topo, h) for h in topo.hosts if h.policy}
    check(GOLDEN / "load-conn" / f"{topology.stem}.json", json.dumps(conns, indent=1, sort_keys=True) + "\n")


def test_error_messages_of_every_bad_fixture(capsys, monkeypatch):
    monkeypatch.chdir(BAD[0].parent.parent)  # messages name files as given: bad/NAME.yaml
    out = []
    for path in BAD:
        code = main(["validate", f"bad/{path.name}"])
        captured = capsys.readouterr()
        out.append(f"## bad/{path.name}: exit {code}\n{captured.err}{captured.out}")
    check(GOLDEN / "errors.txt", "\n".join(out))


def test_every_golden_has_its_topology():
    stale = {p.stem for p in (GOLDEN / "load-conn").glob("*.json")} - {p.stem for p in SHIPPED}
    assert not stale, f"goldens without a topology: {sorted(stale)}"
