"""The HTML report: one self-contained page (inline CSS, no JavaScript, nothing fetched)."""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from lab.model.topology import Result
from lab.report.picture import report_picture
from lab.report.table import location, phase_name, short_evidence, summary_text
from lab.verdicts.model import RunReport, Verdict

TEMPLATES = Path(__file__).parent / "templates"


@functools.cache  # one per process: it keeps the compiled template (0.15 s to compile)
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = lambda value: f"{value:.1f} s"
    env.filters["yesno"] = lambda value: "yes" if value else "no"
    env.filters["thousands"] = lambda value: f"{value:,}"
    return env


def display_date(started: str) -> str:
    """ISO 8601 to "2025-11-27 13:06:12 UTC"; anything unparsable is shown as given."""
    try:
        when = datetime.fromisoformat(started)
    except (TypeError, ValueError):
        return started
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    offset = when.utcoffset()
    if offset is None:
        return text
    return f"{text} UTC" if not offset else f"{text} {when.strftime('%z')}"


def _row(report: RunReport, verdict: Verdict) -> dict:
    ev = verdict.evidence
    exposed = verdict.expected is not Result.CLEAR and (ev.marker_in_clear or ev.credential_in_clear)
    return {
        "v": verdict,
        "ev": ev,
        "short": short_evidence(ev),
        "location": location(report, verdict),
        "exposed": exposed,
        "totals": (ev.clear_packets, ev.esp_packets, ev.ah_packets),
    }


def _timings(report: RunReport) -> list[tuple[str, float]]:
    phases = [(phase_name(k), v) for k, v in report.timings.items() if k != "total"]
    total = report.timings.get("total", sum(v for _, v in phases))
    return phases + [("total", total)] if report.timings else []


def template():
    """The page's template, compiled (lab.runner compiles it while a guest runs)."""
    return _environment().get_template("report.html")


def render_html(report: RunReport, artifacts: dict[str, str] | None = None) -> str:
    return template().render(
        report=report,
        result="PASS" if report.ok else "FAIL",
        summary=summary_text(report),
        date=display_date(report.started),
        timings=_timings(report),
        rows=[_row(report, v) for v in report.verdicts],
        artifacts=report.artifacts if artifacts is None else artifacts,
        picture=report_picture(report),
    )


def write_html(report: RunReport, path: str | Path,
               artifacts: dict[str, str] | None = None) -> Path:
    """Write the page. `artifacts` overrides report.artifacts (write_all adds its sibling files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report, artifacts), encoding="utf-8")
    return path
