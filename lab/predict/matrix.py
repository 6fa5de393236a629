"""The whole matrix of a design: every ordered pair of hosts (a cluster counts as its VIP) and
every service the destination offers, each flow predicted; and the written expectations
checked against it (the lint that runs before any lab starts)."""

from __future__ import annotations

from dataclasses import dataclass

from lab.model.topology import Service, Topology
from lab.predict.flows import Flow, Prediction, predict_flow


def offered(topology: Topology, name: str) -> tuple[Service, ...]:
    """What a host or cluster listens on: its services plus any an expectation asks of it."""
    own = (topology.cluster(name).services if name in {c.name for c in topology.clusters}
           else topology.host(name).services)
    out = list(own)
    for e in topology.expectations:
        if e.destination == name and e.service not in out:
            out.append(e.service)
    return tuple(out)


def matrix_flows(topology: Topology, services: tuple[Service, ...] | None = None,
                 clusters: bool = True) -> list[Flow]:
    """Unicast flows, source-major, in file order. `services` replaces what each offers."""
    targets = [h.name for h in topology.hosts] + ([c.name for c in topology.clusters] if clusters else [])
    flows = []
    for src in topology.hosts:
        for dst in targets:
            if dst == src.name or dst == src.cluster:
                continue
            for s in services if services is not None else offered(topology, dst):
                flows.append(Flow(src.name, dst, s, client=_client(topology, dst, s)))
    return flows


def _client(topology: Topology, dst: str, service: Service) -> str:
    """A real server answers only a real client; the lab's probe stays the default elsewhere."""
    from lab.model.servers import REAL_CLIENTS, REAL_SERVERS

    names = {c.name for c in topology.clusters}
    host = None if dst in names else topology.host(dst)
    real = host is not None and host.servers is not None and service.name in REAL_SERVERS
    return "real" if real and service.name in REAL_CLIENTS else "lab"


def predict_matrix(topology: Topology, services: tuple[Service, ...] | None = None) -> list[Prediction]:
    return [predict_flow(topology, f) for f in matrix_flows(topology, services)]


@dataclass(frozen=True)
class Contradiction:
    """A written expectation the model already contradicts."""

    where: str  # "topologies/x.yaml:41: expect[3]"
    id: str
    written: str
    predicted: Prediction

    def line(self) -> str:
        return (f"{self.where}: written {self.written}, the model predicts {self.predicted.result}"
                f"{' (ike ' + self.predicted.ike + ')' if 'ike' in self.written else ''}: "
                f"{self.predicted.source_side}; {self.predicted.destination_side}; {self.predicted.reason}")


def lint(topology: Topology) -> list[Contradiction]:
    out = []
    for i, e in enumerate(topology.expectations):
        p = predict_flow(topology, Flow.of(e))
        wrong = p.result != e.result.value or (e.ike is not None and p.ike != e.ike)
        if wrong:
            where = f"{e.where.file}:{e.where.line}: expect[{i}]" if e.where else f"{topology.path}: expect[{i}]"
            written = e.result.value + (f", ike {e.ike}" if e.ike else "")
            out.append(Contradiction(where, e.id, written, p))
    return out
