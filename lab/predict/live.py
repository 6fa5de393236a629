"""`lab verify --matrix`: run the whole predicted matrix on the wire, not only what was written.

Every cell becomes an expectation whose result is the prediction, so each verdict compares the
prediction with the observation; written expectations keep their own settings (real clients,
bulk, tamper, broadcast) and are judged against what they say as well. A flow where prediction
and observation differ means the model or the lab is wrong: the run fails and names it.

The flows run in waves, one lab each: the written expectations together (as `lab verify` runs
them), then the rest with at most WAVE flows that negotiate IKE or start a real client.
Measured: with 20 and more such flows at once, the guest's one CPU installs SAs so slowly
(8-12 s, while the machine was shared) that initiators give up after their 4 retransmits and a
Request host's soft SA agent misses its 3 s, so verdicts would judge the lab's load, not the design.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from lab.model.topology import Expectation, Result, Service, Topology
from lab.predict.flows import Flow, Prediction, predict_flow
from lab.predict.matrix import matrix_flows
from lab.verdicts.model import Inconclusive, Observed, RunReport


@dataclass(frozen=True)
class MatrixRow:
    """One flow of a matrix run: what was written, predicted and observed."""

    id: str
    source: str
    destination: str
    service: str
    written: Result | None
    predicted: Result
    observed: Observed
    why: str  # the prediction's reasoning
    evidence: str  # what the wire showed

    @property
    def agrees(self) -> bool:
        return not isinstance(self.observed, Inconclusive) and self.predicted is self.observed

    @property
    def holds(self) -> bool:
        return self.written is None or (not isinstance(self.observed, Inconclusive) and self.written is self.observed)

    def to_dict(self) -> dict:
        """Plain strings, as matrix.json has always carried them."""
        return {**self.__dict__, "written": self.written and self.written.value, "predicted": self.predicted.value,
                "observed": self.observed.value, "agrees": self.agrees, "holds": self.holds}


def matrix_topology(topology: Topology, services: tuple[Service, ...] | None = None
                    ) -> tuple[Topology, dict[str, Prediction], dict[str, Expectation]]:
    """The topology with one expectation per matrix flow (result = prediction), written
    expectations first. A cluster's VIP is a destination like a host: the lab probes it as it
    does a written `to: <cluster>` (judged against the node that answered), so the flows a
    cluster design is about are run, not only those to each node's own address."""
    written = {e.id: e for e in topology.expectations}
    flows = [Flow.of(e) for e in topology.expectations]
    flows += [f for f in matrix_flows(topology, services) if f.id not in written]
    predictions = {f.id: predict_flow(topology, f) for f in flows}
    exps = []
    for f in flows:
        base = written.get(f.id) or Expectation(f.source, f.destination, f.service, Result.CLEAR,
                                                client=f.client)
        exps.append(replace(base, result=Result(predictions[f.id].result), ike=None))
    return replace(topology, expectations=tuple(exps)), predictions, written


def rows(report: RunReport, predictions: dict[str, Prediction], written: dict[str, Expectation]) -> list[MatrixRow]:
    from lab.report.table import short_evidence

    out = []
    for v in report.verdicts:
        w = written.get(v.id)
        out.append(MatrixRow(v.id, v.source, v.destination, v.service, w.result if w else None,
                             v.expected, v.observed, predictions[v.id].reason, short_evidence(v.evidence)))
    return out




def coverage(matrix: list[MatrixRow]) -> tuple[int, int]:
    """(flows with a written expectation, flows in the matrix)."""
    return sum(r.written is not None for r in matrix), len(matrix)


def write_matrix(matrix: list[MatrixRow], topology: Topology, directory: str | Path) -> str:
    covered, total = coverage(matrix)
    path = Path(directory, "matrix.json")
    path.write_text(json.dumps({
        "topology": topology.name, "path": topology.path, "flows": total, "written": covered,
        "disagreements": [r.id for r in matrix if not r.agrees],
        "rows": [r.to_dict() for r in matrix],
    }, indent=1))
    return str(path)


WAVE = 8  # flows that negotiate IKE or start a real client, per lab run


def waves(expectations: tuple[Expectation, ...], predictions: dict[str, Prediction],
          written: dict[str, Expectation], size: int = WAVE) -> list[tuple[Expectation, ...]]:
    """The written expectations first, then the other flows in runs of at most `size` costly ones."""
    first = tuple(e for e in expectations if e.id in written)
    out: list[list[Expectation]] = [list(first)] if first else []
    current: list[Expectation] = []
    costly = 0
    for e in expectations:
        if e.id in written:
            continue
        heavy = predictions[e.id].ike is not None or e.client == "real"
        if heavy and costly >= size:
            out.append(current)
            current, costly = [], 0
        current.append(e)
        costly += heavy
    if current:
        out.append(current)
    return [tuple(w) for w in out]


def merge(parts: list[tuple[str, RunReport]]) -> RunReport:
    """One report of several waves; each wave's files stay in its own folder (`wave-N/`)."""
    if len(parts) == 1:
        return parts[0][1]
    first = parts[0][1]
    timings: dict[str, float] = {}
    for _, r in parts:
        for k, v in r.timings.items():
            timings[k] = round(timings.get(k, 0.0) + v, 3)
    return replace(first, run_id="+".join(r.run_id for _, r in parts),
                   verdicts=[v for _, r in parts for v in r.verdicts], sas=[s for _, r in parts for s in r.sas],
                   errors=[e for _, r in parts for e in r.errors], timings=timings,
                   artifacts={f"{sub}/{k}": f"{sub}/{v}" for sub, r in parts for k, v in r.artifacts.items()},
                   ike_packets={f"{sub}/{k}": v for sub, r in parts for k, v in r.ike_packets.items()})


def run_matrix(topology: Topology, report_dir: str | Path, run_one: Callable[[Topology, str], RunReport],
               services: tuple[Service, ...] | None = None, size: int = WAVE
               ) -> tuple[RunReport, list[MatrixRow]]:
    """Run the whole matrix in waves (run_one(topology, report_dir) runs one lab) and write the
    combined report and matrix.json into report_dir."""
    from lab import report as reports

    swapped, predictions, written = matrix_topology(topology, services)
    groups = waves(swapped.expectations, predictions, written, size)
    parts = []
    for k, exps in enumerate(groups, 1):
        sub = "." if len(groups) == 1 else f"wave-{k}"
        parts.append((sub, run_one(replace(swapped, expectations=exps), str(Path(report_dir, sub)))))
    merged = merge(parts)
    merged.description = (f"{topology.description} [matrix run: every predicted flow; 'expected' is the "
                          "prediction (lab predict), written expectations are in matrix.json]").strip()
    matrix = rows(merged, predictions, written)
    reports.write_all(merged, report_dir)
    write_matrix(matrix, topology, report_dir)
    return merged, matrix
