"""Report writers. Each reads only a lab.verdicts.model.RunReport.

- table: the terminal report (rich)
- jsonout: result.json, the machine-readable result
- junit: junit.xml for CI
- html: report.html, one self-contained page for people
"""

from __future__ import annotations

from pathlib import Path

from lab.report.html import write_html
from lab.report.jsonout import write_json
from lab.report.junit import write_junit
from lab.verdicts.model import RunReport

JSON_NAME, JUNIT_NAME, HTML_NAME = "result.json", "junit.xml", "report.html"


def _html_artifacts(report: RunReport) -> dict[str, str]:
    """The run's artifacts plus the sibling result files, unless they are listed already."""
    artifacts = dict(report.artifacts)
    for name in (JSON_NAME, JUNIT_NAME):
        if name not in artifacts.values():
            artifacts.setdefault(name, name)
    return artifacts


def write_all(report: RunReport, directory: str | Path) -> dict[str, str]:
    """Write result.json, junit.xml and report.html into `directory`.

    Returns kind -> path: {"json": ".../result.json", "junit": ".../junit.xml", "html": ...}.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": write_json(report, directory / JSON_NAME),
        "junit": write_junit(report, directory / JUNIT_NAME),
        "html": write_html(report, directory / HTML_NAME, _html_artifacts(report)),
    }
    return {name: str(path) for name, path in paths.items()}


__all__ = ["write_all", "write_html", "write_json", "write_junit"]
