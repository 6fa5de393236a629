"""Each expectation written in a topology file holds on the wire."""

from __future__ import annotations


def test_expectation(expectation_case, lab_runs):
    __tracebackhide__ = True
    path, exp_id = expectation_case
    report = lab_runs.get(path)
    assert not report.errors, f"the lab run reported errors: {report.errors}"
    verdict = next((v for v in report.verdicts if v.id == exp_id), None)
    assert verdict is not None, f"no verdict for {exp_id}: the probe never ran"
    assert verdict.ok, (f"{path}:{verdict.line}: {exp_id}: expected {verdict.expected}, "
                        f"observed {verdict.observed}: {verdict.reason}")
