"""The table of docs/matrix-results.md, from the matrix runs themselves.

    python tools/matrix_results.py REPORT_DIR... [--notes docs/matrix-notes.yaml] > docs/matrix-results.md

Each REPORT_DIR is one `lab verify --matrix --report REPORT_DIR` run (its matrix.json and
result.json). A topology may have several runs (a rerun, a run after a fix); they are read in
the order they started. Per topology: flows, agreeing flows and written-expectation coverage
of the last run; every flow that disagreed in any run, with the cause the notes file gives it
(`topology: {flow id: "fixed: what was wrong and the change"}`, or any other text for a cause not
fixed). A disagreement counts as fixed only when it agrees in the last run and its note starts
with "fixed:"; without a note it is printed as unexplained: the table never calls a flow fixed
because a rerun happened to agree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Run:
    topology: str
    started: str
    flows: int
    written: int
    agree: int
    disagreements: list[str]
    failed_written: list[str]  # written expectations the wire contradicted
    seconds: float
    errors: list[str]


@dataclass
class Topology:
    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def last(self) -> Run:
        return self.runs[-1]

    @property
    def found(self) -> list[str]:
        """Every flow that disagreed in some run, first seen first."""
        out: list[str] = []
        for r in self.runs:
            out += [f for f in r.disagreements if f not in out]
        return out


def read_run(directory: Path) -> Run:
    matrix = json.loads((directory / "matrix.json").read_text())
    result = json.loads((directory / "result.json").read_text())
    rows = matrix["rows"]
    return Run(matrix["topology"], result.get("started", ""), matrix["flows"], matrix["written"],
               sum(r["agrees"] for r in rows), list(matrix["disagreements"]),
               [r["id"] for r in rows if not r["holds"]], float(result.get("timings", {}).get("total", 0.0)),
               list(result.get("errors", [])))


def gather(directories: list[Path]) -> list[Topology]:
    runs = sorted((read_run(d) for d in directories), key=lambda r: r.started)
    by_name: dict[str, Topology] = {}
    for r in runs:
        by_name.setdefault(r.topology, Topology(r.topology)).runs.append(r)
    return [by_name[n] for n in sorted(by_name)]


def read_notes(path: Path | None) -> dict[str, dict[str, str]]:
    if path is None or not path.exists():
        return {}
    from ruamel.yaml import YAML

    return {str(k): {str(f): str(t) for f, t in (v or {}).items()}
            for k, v in (YAML(typ="safe").load(path.read_text()) or {}).items()}


def table(topologies: list[Topology], notes: dict[str, dict[str, str]]) -> list[str]:
    lines = ["| topology | flows | agree | disagreements found | fixed | still disagree | "
             "covered by written expectations | runs | run time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in topologies:
        last, found, noted = t.last, t.found, notes.get(t.name, {})
        fixed = [f for f in found if f not in last.disagreements and noted.get(f, "").startswith("fixed:")]
        pct = 100 * last.written / max(last.flows, 1)
        times = ", ".join(f"{r.seconds:.0f}" for r in t.runs)
        lines.append(f"| `{t.name}` | {last.flows} | {last.agree} | {len(found)} | {len(fixed)} | "
                     f"{len(last.disagreements)} | {last.written} ({pct:.0f} %) | {len(t.runs)} | {times} |")
    return lines


def details(topologies: list[Topology], notes: dict[str, dict[str, str]]) -> list[str]:
    out = []
    for t in topologies:
        noted = notes.get(t.name, {})
        for f in t.found:
            state = "still disagrees" if f in t.last.disagreements else "agrees in the last run"
            out.append(f"- `{t.name}` `{f}` ({state}): {noted.get(f, '**unexplained**')}")
        for f in t.last.failed_written:
            out.append(f"- `{t.name}` `{f}`: the written expectation failed in the last run")
        for e in t.last.errors:
            out.append(f"- `{t.name}`: lab error in the last run: {e}")
    return out


def render(topologies: list[Topology], notes: dict[str, dict[str, str]]) -> str:
    flows = sum(t.last.flows for t in topologies)
    agree = sum(t.last.agree for t in topologies)
    written = sum(t.last.written for t in topologies)
    seconds = [r.seconds for t in topologies for r in t.runs]
    lines = [f"{len(topologies)} topologies, {flows} flows; {agree} as predicted in the last run of each; "
             f"written expectations cover {written} ({100 * written / max(flows, 1):.0f} %). "
             f"Run time per matrix run: median {statistics.median(seconds) if seconds else 0:.0f} s, "
             f"total {sum(seconds) / 60:.0f} min.", ""]
    lines += table(topologies, notes)
    found = details(topologies, notes)
    lines += ["", "Disagreements and failures, each with its cause:", ""] + (found or ["- none"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", type=Path, help="report folders of lab verify --matrix runs")
    ap.add_argument("--notes", type=Path, help="YAML: topology -> {flow id: cause and fix}")
    args = ap.parse_args(argv)
    missing = [str(d) for d in args.reports if not (d / "matrix.json").exists()]
    if missing:
        print(f"no matrix.json in: {', '.join(missing)}", file=sys.stderr)
        return 2
    sys.stdout.write(render(gather(args.reports), read_notes(args.notes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
