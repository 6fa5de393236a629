"""`lab verify --matrix`: run the whole predicted matrix on the wire, not only what was written.

Every cell becomes an expectation whose result is the prediction, so each verdict compares the
prediction with the observation; written expectations keep their own settings (real clients,
bulk, tamper, broadcast) and are judged against what they say as well. A flow where prediction
and observation differ means the model or the lab is wrong: the run fails and names it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from lab.model.topology import Expectation, Result, Service, Topology
from lab.predict.flows import Flow, Prediction, predict_flow
from lab.predict.matrix import matrix_flows
from lab.verdicts.model import RunReport, Verdict


@dataclass(frozen=True)
class MatrixRow:
    """One flow of a matrix run: what was written, predicted and observed."""

    id: str
    source: str
    destination: str
    service: str
    written: str | None
    predicted: str
    observed: str
    why: str  # the prediction's reasoning
    evidence: str  # what the wire showed

    @property
    def agrees(self) -> bool:
        return self.predicted == self.observed

    @property
    def holds(self) -> bool:
        return self.written is None or self.written == self.observed


def matrix_topology(topology: Topology, services: tuple[Service, ...] | None = None
                    ) -> tuple[Topology, dict[str, Prediction], dict[str, Expectation]]:
    """The topology with one expectation per matrix flow (result = prediction), written
    expectations first. Cluster VIPs are left out: the lab probes hosts."""
    written = {e.id: e for e in topology.expectations}
    flows = [Flow.of(e) for e in topology.expectations]
    flows += [f for f in matrix_flows(topology, services, clusters=False) if f.id not in written]
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
        out.append(MatrixRow(v.id, v.source, v.destination, v.service, w.result.value if w else None,
                             v.expected, v.observed, predictions[v.id].reason, short_evidence(v.evidence)))
    return out


def written_verdicts(report: RunReport, written: dict[str, Expectation]) -> list[Verdict]:
    """The run's verdicts judged against what was written (for JUnit and the usual report)."""
    return [replace(v, expected=written[v.id].result.value) for v in report.verdicts if v.id in written]


def coverage(matrix: list[MatrixRow]) -> tuple[int, int]:
    """(flows with a written expectation, flows in the matrix)."""
    return sum(r.written is not None for r in matrix), len(matrix)


def write_matrix(matrix: list[MatrixRow], topology: Topology, directory: str | Path) -> str:
    covered, total = coverage(matrix)
    path = Path(directory, "matrix.json")
    path.write_text(json.dumps({
        "topology": topology.name, "path": topology.path, "flows": total, "written": covered,
        "disagreements": [r.id for r in matrix if not r.agrees],
        "rows": [{**r.__dict__, "agrees": r.agrees, "holds": r.holds} for r in matrix],
    }, indent=1))
    return str(path)
