"""Failover reports: a figures table next to Windows' figures, JSON, JUnit, and an HTML page with
each scenario's timeline drawn as inline SVG (requests OK or failed over time, SA events marked).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from rich.table import Table

from lab.verdicts.failover import WINDOWS_SHORT, FailoverResult

TEMPLATES = Path(__file__).parent / "templates"


def _fmt(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def print_failover(results: list[FailoverResult], console) -> None:
    table = Table(title="Failover: requests to the VIP while it moves", title_justify="left")
    for col in ("scenario", "mode", "client timers", "outage", "allowed", "new SA after",
                "cleartext", "into stale SA", "failed / sent", "Windows"):
        table.add_column(col, overflow="fold", no_wrap=col in ("scenario", "mode"))
    for r in results:
        style = "green" if r.ok else "bold red"
        table.add_row(r.name, r.mode, r.profile, f"[{style}]{_fmt(r.outage)}[/{style}]", f"{r.max_seconds:g} s",
                      _fmt(r.new_sa_after), str(r.cleartext_packets), str(r.stale_sa_packets),
                      f"{r.failed_requests} / {r.requests}", WINDOWS_SHORT[r.mode])
    console.print(table)
    for r in results:
        if r.steady and r.steady_reached:
            console.print(f"{r.name}: {r.steady}", highlight=False, markup=False)
    for r in results:
        if not r.ok:
            console.print(f"FAILED {r.name}: {r.reason}", highlight=False, markup=False)
    held = sum(r.ok for r in results)
    console.print(f"{held}/{len(results)} failover scenarios hold", highlight=False)


def timeline_svg(r: FailoverResult, width: int = 900, height: int = 150) -> str:
    """Requests as ticks (green up: answered, red down: failed) against seconds from the move."""
    if not r.timeline:
        return ""
    t_min = min(t for t, _ in r.timeline)
    t_max = max(t for t, _ in r.timeline) + 0.5
    span = max(t_max - t_min, 1e-3)
    left, right, mid = 40, width - 10, height // 2

    def x(t: float) -> float:
        return left + (t - t_min) / span * (right - left)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="failover timeline of {r.name}">',
             f'<line x1="{left}" y1="{mid}" x2="{right}" y2="{mid}" stroke="#999"/>']
    if r.outage is not None:
        oks = [t for t, ok in r.timeline if ok]
        before = [t for t in oks if t < 0]
        after = [t for t in oks if t > 0]
        if before and after:
            parts.append(f'<rect x="{x(max(before)):.1f}" y="10" width="{x(min(after)) - x(max(before)):.1f}" '
                         f'height="{height - 40}" fill="#fde2e2"/>')
    for t, ok in r.timeline:
        y2 = mid - 22 if ok else mid + 22
        parts.append(f'<line x1="{x(t):.1f}" y1="{mid}" x2="{x(t):.1f}" y2="{y2}" '
                     f'stroke="{"#1a7f37" if ok else "#cf222e"}" stroke-width="1.5"/>')
    parts.append(f'<line x1="{x(0):.1f}" y1="6" x2="{x(0):.1f}" y2="{height - 28}" stroke="#111" stroke-width="2"/>')
    parts.append(f'<text x="{x(0) + 4:.1f}" y="16" font-size="11">VIP moves ({r.mode})</text>')
    for t, label in r.sa_events:
        if t_min <= t <= t_max:
            parts.append(f'<line x1="{x(t):.1f}" y1="10" x2="{x(t):.1f}" y2="{height - 28}" stroke="#0969da" '
                         f'stroke-dasharray="4 3"><title>{label} at {t:+.2f} s</title></line>')
    step = 1 if span <= 12 else 5 if span <= 60 else 30
    tick = int(t_min) - int(t_min) % step
    while tick <= t_max:
        if tick >= t_min:
            parts.append(f'<text x="{x(tick):.1f}" y="{height - 8}" font-size="10" text-anchor="middle">{tick:+d} s</text>')
        tick += step
    parts.append("</svg>")
    return "".join(parts)


def write_failover(results: list[FailoverResult], directory: str, topology: str) -> dict[str, str]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": "ipsec-lab/failover/1", "topology": topology,
           "scenarios": [{**asdict(r), "ok": r.ok, "reason": r.reason} for r in results]}
    (out / "failover.json").write_text(json.dumps(doc, indent=2))
    suite = ET.Element("testsuite", name=f"{topology}-failover", tests=str(len(results)),
                       failures=str(sum(not r.ok for r in results)))
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=topology, name=f"failover:{r.name}",
                             time=f"{(r.outage or 0):.3f}")
        if not r.ok:
            ET.SubElement(case, "failure", message=r.reason).text = r.reason
    ET.ElementTree(ET.Element("testsuites")).getroot().append(suite)
    ET.ElementTree(suite).write(out / "failover-junit.xml", encoding="utf-8", xml_declaration=True)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    html = env.get_template("failover.html").render(
        topology=topology, results=results, svg={r.name: Markup(timeline_svg(r)) for r in results})
    (out / "failover.html").write_text(html)
    return {"json": str(out / "failover.json"), "junit": str(out / "failover-junit.xml"),
            "html": str(out / "failover.html")}
