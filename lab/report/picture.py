"""The topology as a picture: networks, hosts by role, the firewall, a cluster's VIP, and each
flow as an arrow coloured by its verdict (a failed expectation marked, changed flows drawn
thick in `lab diff`). Graphviz lays it out (`dot -Tsvg`); the SVG goes inline into the page,
with no outside assets."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab.model.topology import Topology

COLOURS = {"esp": "#1a7f37", "ah": "#0969da", "ah+esp": "#1a7f37", "clear": "#d4a72c", "dropped": "#cf222e",
           "tls": "#1a7f37", "refused": "#8250df"}
ROLE_SHAPES = {"front-end": ("box", "#ddf4ff"), "back-end": ("box3d", "#dafbe1"), "domain-controller": ("component", "#fff8c5"),
               "firewall": ("octagon", "#ffebe9"), "client": ("ellipse", "#f6f8fa"), "edge": ("house", "#fbefff")}


@dataclass(frozen=True)
class Arrow:
    source: str
    destination: str  # a host or a cluster
    label: str  # the service
    verdict: str  # observed (or predicted) result
    failed: bool = False  # a failed expectation (or a prediction the wire contradicted)
    highlight: bool = False  # changed by the diff
    faded: bool = False  # unchanged, shown for context in a diff


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot_source(topology: Topology, arrows: list[Arrow]) -> str:
    lines = ["digraph topology {", "  graph [rankdir=TB, bgcolor=transparent, fontname=Helvetica, nodesep=0.35, ranksep=0.9];",
             "  node [fontname=Helvetica, fontsize=11, style=filled];", "  edge [fontname=Helvetica, fontsize=9];"]
    for n in topology.networks:
        lines.append(f"  {_q('net:' + n.name)} [label={_q(n.name + chr(10) + str(n.subnet))}, shape=note, fillcolor=\"#eaeef2\"];")
    for h in topology.hosts:
        shape, fill = ROLE_SHAPES.get(h.role, ("box", "#ffffff"))
        extra = []
        if h.policy:
            extra.append(f"policy {h.policy}")
        if h.firewall:
            extra.append(f"firewall: {len(h.firewall.allow)} allow, default {h.firewall.default}")
        label = "\n".join([f"{h.name} ({h.role})", ", ".join(str(a) for a in h.addresses), *extra])
        lines.append(f"  {_q(h.name)} [label={_q(label)}, shape={shape}, fillcolor=\"{fill}\"];")
        lines += _links(topology, h)
    for c in topology.clusters:
        lines.append(f"  {_q(c.name)} [label={_q(f'{c.name} VIP{chr(10)}{c.vip} (on {c.owner})')}, shape=doublecircle, fillcolor=\"#dafbe1\"];")
        for node in c.nodes:
            lines.append(f"  {_q(c.name)} -> {_q(node)} [dir=none, style=dashed, color=\"#8c959f\"];")
    for a in grouped(arrows):
        colour = COLOURS.get(a.verdict, "#57606a")
        attrs = [f"color=\"{colour}{'55' if a.faded else ''}\"", f"fontcolor=\"{colour}\"", "constraint=false",
                 f"label={_q(a.label + (' ✗' if a.failed else '') + (' *' if a.highlight else ''))}",
                 f"penwidth={3.5 if a.highlight else 2.5 if a.failed else 1.2}"]
        if a.verdict == "dropped":
            attrs.append("style=dashed, arrowhead=tee")
        if a.failed:
            attrs.append("fontname=\"Helvetica-Bold\"")
        lines.append(f"  {_q(a.source)} -> {_q(a.destination)} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _links(topology: Topology, host) -> list[str]:
    """Wires between a host and its networks, directed so that dot stacks them: hosts of the
    first network above it, a router between the networks it joins, the others below theirs."""
    order = [n.name for n in topology.networks]
    nets = sorted({i.network for i in host.interfaces}, key=order.index)
    style = '[dir=none, color="#8c959f", penwidth=2, weight=8]'
    name, first = _q(host.name), _q("net:" + nets[0])
    if len(nets) == 1:
        return [f"  {name} -> {first} {style};" if order.index(nets[0]) == 0 else f"  {first} -> {name} {style};"]
    return [f"  {first} -> {name} {style};"] + [f"  {name} -> {_q('net:' + n)} {style};" for n in nets[1:]]


def grouped(arrows: list[Arrow]) -> list[Arrow]:
    """One arrow per pair and verdict (services listed on it), so a big matrix stays legible."""
    groups: dict[tuple, list[str]] = {}
    for a in arrows:
        groups.setdefault((a.source, a.destination, a.verdict, a.failed, a.highlight, a.faded), []).append(a.label)
    return [Arrow(src, dst, ", ".join(labels), verdict, failed, highlight, faded)
            for (src, dst, verdict, failed, highlight, faded), labels in groups.items()]


def render_svg(dot: str) -> str:
    """Graphviz's SVG without its XML prolog, ready to inline; a note when dot is missing."""
    if not shutil.which("dot"):
        return '<p class="muted">No picture: Graphviz (dot) is not installed (make setup installs it).</p>'
    done = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60)
    if done.returncode:
        return f'<p class="muted">No picture: dot failed: {html.escape(done.stderr.strip()[:200])}</p>'
    svg = done.stdout
    svg = svg[svg.index("<svg"):] if "<svg" in svg else svg
    # Scale to the page (the viewBox keeps the proportions) instead of Graphviz's fixed size.
    return re.sub(r'<svg width="[^"]*" height="[^"]*"', '<svg style="max-width:100%;height:auto"', svg, count=1)


def legend() -> str:
    items = "".join(f'<span style="color:{c};margin-right:1em">&#9632; {k}</span>' for k, c in COLOURS.items()
                    if k not in ("ah+esp",))
    return (f'<p class="muted">{items} dashed with a bar: dropped; &#10007;: the wire contradicted what was '
            'expected; *: changed</p>')


def report_picture(report) -> str:
    """The picture of a run: each verdict as an arrow; '' when the topology cannot be read."""
    from lab.errors import TopologyError
    from lab.model.load import load_topology

    try:
        topology = load_topology(report.path)
    except (TopologyError, OSError):
        return ""
    arrows = [Arrow(v.source, v.destination, v.service, str(v.observed), failed=not v.ok) for v in report.verdicts]
    return render_svg(dot_source(topology, arrows)) + legend()


def write_diff_page(topology: Topology, rows, changes, path: str | Path, static: bool = False) -> str:
    """diff.html: NEW's topology with every observed (or, static, predicted) flow, the changed
    ones drawn thick."""
    changed = {c.id: c for c in changes}
    arrows = [Arrow(r.source, r.destination, r.service, str(r.observed), failed=not r.agrees,
                    highlight=r.id in changed, faded=r.id not in changed) for r in rows or []]
    items = "".join(f"<li><code>{html.escape(c.line())}</code>{'' if c.covered else ' (not covered by NEW&#39;s expectations)'}</li>"
                    for c in changes) or "<li>No flow changed.</li>"
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>lab diff: {html.escape(topology.name)}</title>"
            "<style>body{font-family:Helvetica,Arial,sans-serif;margin:2em} .muted{color:#57606a} svg{max-width:100%;height:auto}</style>"
            f"</head><body><h1>lab diff: {html.escape(topology.name)}</h1>"
            f"<p class=\"muted\">{'predicted from the model, nothing run' if static else 'observed on the wire'}</p>"
            f"<h2>Changed flows</h2><ul>{items}</ul>"
            f"<h2>Topology</h2>{render_svg(dot_source(topology, arrows))}{legend()}</body></html>\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(page, encoding="utf-8")
    return str(path)

