"""`lab predict` output: the matrix as a terminal table (rich) or JSON, and the lint lines."""

from __future__ import annotations

import json

from rich import box
from rich.console import Console
from rich.table import Table

from lab.model.topology import Topology
from lab.predict.flows import Prediction
from lab.predict.matrix import Contradiction

COLOURS = {"esp": "green", "ah": "cyan", "clear": "yellow", "dropped": "red", "tls": "green", "refused": "magenta"}


def print_matrix(topology: Topology, predictions: list[Prediction], console: Console,
                 written: dict[str, str] | None = None) -> None:
    written = written or {}
    table = Table(box=box.SIMPLE, title=f"{topology.name}: {len(predictions)} flows predicted",
                  title_justify="left")
    for col in ("from", "to", "service", "predicted", "written", "decided by", "why"):
        table.add_column(col, overflow="fold")
    for p in predictions:
        colour = COLOURS.get(p.result, "white")
        table.add_row(p.flow.source, p.flow.destination, p.flow.service.name + _via(p),
                      f"[{colour}]{p.result}[/{colour}]", written.get(p.id, ""),
                      f"{p.source_side}\n{p.destination_side}", p.reason)
    console.print(table)


def _via(p: Prediction) -> str:
    return "" if p.flow.via == "unicast" else f" ({p.flow.via})"


def print_lint(contradictions: list[Contradiction], console: Console) -> None:
    for c in contradictions:
        console.print(c.line(), highlight=False, markup=False)


def as_json(topology: Topology, predictions: list[Prediction], contradictions: list[Contradiction],
            written: dict[str, str]) -> str:
    return json.dumps({
        "topology": topology.name, "path": topology.path,
        "flows": [{**p.to_dict(), "written": written.get(p.id)} for p in predictions],
        "contradictions": [{"where": c.where, "id": c.id, "written": c.written,
                            "predicted": c.predicted.result, "why": c.predicted.reason} for c in contradictions],
    }, indent=1)


def print_live_matrix(matrix, topology: Topology, console: Console) -> None:
    """A matrix run: written, predicted, observed per flow; disagreements named below."""
    from lab.predict.live import coverage

    table = Table(box=box.SIMPLE, title=f"{topology.name}: the whole matrix on the wire", title_justify="left")
    for col in ("from", "to", "service", "written", "predicted", "observed", "evidence"):
        table.add_column(col, overflow="fold")
    for r in matrix:
        style = "green" if r.agrees and r.holds else "bold red"
        table.add_row(r.source, r.destination, r.service, str(r.written or "-"), str(r.predicted),
                      f"[{style}]{r.observed}[/{style}]", r.evidence)
    console.print(table)
    for r in matrix:
        if not r.agrees:
            console.print(f"DISAGREES {r.id}: predicted {r.predicted}, observed {r.observed} \u2014 "
                          f"prediction: {r.why}; wire: {r.evidence}", style="red", highlight=False, markup=False)
        if not r.holds:
            console.print(f"FAILED {r.id}: written {r.written}, observed {r.observed}", style="red",
                          highlight=False, markup=False)
    covered, total = coverage(matrix)
    agree = sum(r.agrees for r in matrix)
    console.print(f"{agree}/{total} flows as predicted; written expectations cover {covered} of {total} "
                  f"flows ({100 * covered / max(total, 1):.0f} %)", highlight=False)
