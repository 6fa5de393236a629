"""JUnit XML, so CI shows one test per expectation (and one for the run itself if it broke)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from lab.report.table import evidence_lines, location
from lab.verdicts.model import RunReport, Verdict

RUN_CASE = "lab-run"


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def _properties(parent: ET.Element, report: RunReport) -> None:
    props = ET.SubElement(parent, "properties")
    for name, value in (("kernel", report.kernel), ("run_id", report.run_id),
                        ("topology_path", report.path), ("started", report.started)):
        ET.SubElement(props, "property", name=name, value=str(value))


def _verdict_case(suite: ET.Element, report: RunReport, verdict: Verdict) -> None:
    case = ET.SubElement(suite, "testcase", classname=report.topology, name=verdict.id,
                         time=_seconds(verdict.evidence.seconds))
    details = [verdict.reason, f"expectation: {location(report, verdict)}",
               *evidence_lines(verdict.evidence)]
    if not verdict.ok:
        failure = ET.SubElement(case, "failure", type="ExpectationFailed",
                                message=f"expected {verdict.expected_text}, observed {verdict.observed_text}")
        failure.text = "\n".join(details)
    else:
        ET.SubElement(case, "system-out").text = "\n".join(details)


def _error_case(suite: ET.Element, report: RunReport) -> None:
    case = ET.SubElement(suite, "testcase", classname=report.topology, name=RUN_CASE, time="0.000")
    message = report.errors[0] if len(report.errors) == 1 else f"{len(report.errors)} errors"
    error = ET.SubElement(case, "error", type="LabError", message=message)
    error.text = "\n".join(report.errors)


def junit_tree(report: RunReport) -> ET.ElementTree:
    failures = len(report.failed)
    errors = 1 if report.errors else 0
    tests = len(report.verdicts) + errors
    total = report.timings.get("total", sum(report.timings.values()))
    counts = {"tests": str(tests), "failures": str(failures), "errors": str(errors),
              "skipped": "0", "time": _seconds(total)}
    root = ET.Element("testsuites", name="ipsec-lab", **counts)
    suite = ET.SubElement(root, "testsuite", name=report.topology, timestamp=report.started,
                          **counts)
    _properties(suite, report)
    for verdict in report.verdicts:
        _verdict_case(suite, report, verdict)
    if report.errors:
        _error_case(suite, report)
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(report: RunReport, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_tree(report).write(path, encoding="utf-8", xml_declaration=True)
    return path
