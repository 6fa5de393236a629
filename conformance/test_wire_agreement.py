"""The lab's verdicts, read again from its captures by tcpdump (conformance/wirecheck.py).

The lab classifies packets with its own code (dpkt); here every esp, ah and clear verdict is
checked with tcpdump filter expressions on the same pcaps, so that a bug in the classifier
cannot pass its own exam.
"""

from __future__ import annotations

from pathlib import Path

import dpkt
from conftest import REPORTS
from wirecheck import check_report, report_captures

from lab.guest.capture import END_ETHERTYPE, END_TAG


def test_tcpdump_agrees_with_each_verdict(topology_path, lab_runs):
    report = lab_runs.get(topology_path)
    problems = check_report(report, REPORTS / Path(topology_path).stem)
    assert not problems, "tcpdump disagrees with the lab:\n" + "\n".join(problems)


def test_every_capture_closes_after_its_end_frame(topology_path, lab_runs):
    """tcpdump is stopped only once it wrote the end frame the lab put on its bridge after the
    probes (lab.guest.capture.drain): every frame the bridge carried before is in the file."""
    report = lab_runs.get(topology_path)
    captures = report_captures(report, REPORTS / Path(topology_path).stem)
    assert captures, "the report names no capture"
    for path in captures:
        with open(path, "rb") as f:
            frames = [buf for _, buf in dpkt.pcap.Reader(f)]
        assert any(buf[12:14] == END_ETHERTYPE.to_bytes(2, "big") and END_TAG in buf for buf in frames), \
            f"{path.name}: no end frame: the capture may have stopped before its last frames"
