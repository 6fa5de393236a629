"""Each expectation written in a topology file holds on the wire."""

from __future__ import annotations

from lab.pytest_plugin import check_expectation


def test_expectation(expectation_case, lab_runs):
    __tracebackhide__ = True
    check_expectation(lab_runs, *expectation_case)
