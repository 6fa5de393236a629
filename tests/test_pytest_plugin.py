"""The pytest plugin (entry point pytest11 `lab`) collects a user's designs: one test per written
expectation with the conformance suite's ids, plus the matrix with --lab-matrix. Collection
only here; conformance/test_plugin.py runs the sample repository on a live lab."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "user-repo"


def _pytest(cwd, *args):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, cwd=cwd)


def test_sample_repository_collects_outside_the_checkout(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE, repo)
    done = _pytest(repo, "--lab-topologies", "designs/*.yaml", "--collect-only", "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    assert ids == ["designs/mail-all.yaml::mail-all::web->mail:imap",
                   "designs/mail-all.yaml::mail-all::web->mail:smtp",
                   "designs/web-http.yaml::web-http::web->mail:http",
                   "designs/web-http.yaml::web-http::web->mail:imap"]
    done = _pytest(repo, "--lab-topologies", "designs/*.yaml", "--lab-matrix", "--collect-only", "-q")
    assert "designs/web-http.yaml::web-http::matrix::fw->mail:http" in done.stdout


def test_ids_match_the_conformance_suite():
    from lab.model.load import load_topology
    from lab.pytest_plugin import expectation_id

    topo = load_topology(ROOT / "topologies" / "ah-vs-esp.yaml")
    assert expectation_id(topo, topo.expectations[2]) == "ah-vs-esp::fe->be:pop3:tamper[B2]"


def test_a_glob_that_matches_nothing_is_a_usage_error(tmp_path):
    done = _pytest(tmp_path, "--lab-topologies", "designs/*.yaml", "--collect-only", "-q")
    assert done.returncode == 4 and "no file matches designs/*.yaml" in done.stderr


def test_a_bad_design_fails_collection_with_its_line(tmp_path):
    (tmp_path / "designs").mkdir()
    (tmp_path / "designs" / "bad.yaml").write_text("name: bad\nnetworks: {lan: 10.0.0.0/24}\nhosts:\n  a: {role: nope}\n")
    done = _pytest(tmp_path, "--lab-topologies", "designs/*.yaml", "--collect-only", "-q")
    assert done.returncode != 0 and "bad.yaml:4" in done.stdout
