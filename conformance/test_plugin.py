"""The pytest plugin on a live lab: the sample user repository (tests/data/user-repo, two
designs), copied outside this checkout, runs green with --lab-matrix, writes JUnit and the
report index."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "user-repo"


def test_sample_user_repository_runs_green(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE, repo)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "--lab-topologies", "designs/*.yaml", "--lab-matrix",
                           "--junitxml=reports/junit.xml", "--lab-reports=reports/lab"],
                          capture_output=True, text=True, cwd=repo, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    suite = ET.parse(repo / "reports" / "junit.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) == 8 and int(suite.get("failures")) == 0 and int(suite.get("errors")) == 0
    index = (repo / "reports" / "lab" / "index.html").read_text()
    assert "web-http/report.html" in index and "mail-all/report.html" in index
    assert "<svg" in (repo / "reports" / "lab" / "web-http" / "report.html").read_text()  # the picture
