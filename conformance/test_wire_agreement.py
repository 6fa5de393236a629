"""The lab's verdicts, read again from its captures by tcpdump (conformance/wirecheck.py).

The lab classifies packets with its own code (dpkt); here every esp, ah and clear verdict is
checked with tcpdump filter expressions on the same pcaps, so that a bug in the classifier
cannot pass its own exam.
"""

from __future__ import annotations

from pathlib import Path

from conftest import REPORTS
from wirecheck import check_report


def test_tcpdump_agrees_with_each_verdict(topology_path, lab_runs):
    report = lab_runs.get(topology_path)
    problems = check_report(report, REPORTS / Path(topology_path).stem)
    assert not problems, "tcpdump disagrees with the lab:\n" + "\n".join(problems)
