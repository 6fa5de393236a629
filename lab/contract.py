"""The contract between the host and the lab kernel: the plan handed in, the results handed back.

Both sides import this module (the guest too, so: standard library only). The host builds a
`Plan` once (lab.compile.plan), lets the services step complete it (real servers, real
clients), freezes it and writes it once; the executor reads it back with its version and its
fields checked. The executor fills a `Results`, writes it once; the host reads it back the same
way. A file that does not match names itself and what is wrong, instead of a KeyError later.

`HostPlan`, `Probe` and `Outcome` are records inside those: their fields are checked like the
rest, and they also answer `record["field"]` and `record.get("field")` reads, so the guest's
small modules read them as the plain JSON records they are.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

PLAN_FORMAT = 1
RESULTS_FORMAT = 1
PROGRESS = "@@lab "  # prefix of the executor's progress lines on stdout; the kernels read them


class ContractError(ValueError):
    """A plan or results file that does not match this version of the contract."""


class Record:
    """A dataclass that checks its fields when read from JSON and can be frozen once complete."""

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot change after it was written")
        super().__setattr__(name, value)

    # Read-only mapping access: the guest modules read these as the JSON records they were.
    def __getitem__(self, name: str) -> Any:
        if name not in self._names():
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in self._names() else default

    def __contains__(self, name: str) -> bool:
        return name in self._names()

    def keys(self) -> list[str]:  # so that `{**record}` copies it into a plain dict
        return [f.name for f in dataclasses.fields(self)]

    @classmethod
    def _names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    def freeze(self) -> None:
        object.__setattr__(self, "_frozen", True)

    def to_json(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: Any, where: str):
        """Build from a decoded JSON object, naming `where` (file and place) on any mismatch."""
        if not isinstance(data, dict):
            raise ContractError(f"{where}: expected an object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        missing = sorted(n for n, f in fields.items() if n not in data and _required(f))
        if unknown or missing:
            parts = ([f"unknown field(s) {', '.join(unknown)}"] if unknown else []) + \
                    ([f"missing field(s) {', '.join(missing)}"] if missing else [])
            raise ContractError(f"{where}: {cls.__name__}: {'; '.join(parts)}")
        return cls(**{k: cls._decode(k, v, where) for k, v in data.items()})

    @classmethod
    def _decode(cls, name: str, value: Any, where: str) -> Any:
        return value


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(eq=False)
class HostPlan(Record):
    """One host: its namespace, links, routes, listeners, firewall and charon configuration."""

    name: str
    role: str
    ns: str
    forward: bool
    interfaces: list[dict]
    routes: list[dict]
    listeners: list[dict]
    vips: list[dict]
    firewall: dict | None
    charon: dict | None  # {"conns", "settings", runtime hints}; None: no IPsec policy
    servers: dict | None = None  # real daemons (lab.services), added by the services step
    reply_guard: dict | None = None  # an IKEv1 Respond Only host's iptables rules (lab.compile.reply_guard)


@dataclass(eq=False)
class Probe(Record):
    """One expectation's flow: who sends what to where, and what marks it on the wire."""

    id: str
    expectation: str
    src: str
    src_address: str
    dst: str
    dst_address: str
    cluster: dict | None
    via: str
    tamper: dict | None
    protocol: str
    port: int
    service: str
    marker: str
    payload: str
    credential_on_wire: str
    timeout: float
    bulk: int
    nat_aliases: dict
    client: dict | None = None  # a real client (lab.services), added by the services step
    proxied: dict | None = None  # a proxy's leg, found in the back-end's log


@dataclass(eq=False)
class Plan(Record):
    """Everything the executor runs: no model, no secrets (those travel in their own file)."""

    run_id: str
    topology: str
    outdir: str
    switch_ns: str
    networks: list[dict]
    hosts: list[HostPlan]
    probes: list[Probe]
    failover: dict | None
    nat_aliases: dict
    provider: str = "netns"  # which backend carries the hosts (lab.guest.backends)
    image: dict | None = None  # the Docker provider's image (lab.images)
    pki: dict | None = None  # the lab CA's public parts (authentication: certificates)
    format: int = PLAN_FORMAT

    def host(self, name: str) -> HostPlan:
        return next(h for h in self.hosts if h.name == name)

    def ns_of(self) -> dict[str, str]:
        return {h.name: h.ns for h in self.hosts}

    def freeze(self) -> None:
        """Complete: no field of the plan or of its records changes after this."""
        for r in (*self.hosts, *self.probes):
            r.freeze()
        object.__setattr__(self, "hosts", tuple(self.hosts))
        object.__setattr__(self, "probes", tuple(self.probes))
        super().freeze()

    @classmethod
    def _decode(cls, name: str, value: Any, where: str) -> Any:
        if name == "hosts":
            return [HostPlan.from_json(h, f"{where}: hosts[{i}]") for i, h in enumerate(_list(value, where, name))]
        if name == "probes":
            return [Probe.from_json(p, f"{where}: probes[{i}]") for i, p in enumerate(_list(value, where, name))]
        if name == "format" and value != PLAN_FORMAT:
            raise ContractError(f"{where}: plan format {value!r}, this lab reads format {PLAN_FORMAT}")
        return value


@dataclass(eq=False)
class Outcome(Record):
    """What happened to one probe, matched to it by `id` (never by position)."""

    id: str
    delivered: bool
    error: str | None
    sport: int | None
    t_start: float
    t_end: float | None
    t_reply: float | None
    refused: bool = False  # a real client was refused (TLS, login)
    client: str | None = None  # which real client ran it ("curl", "proxy", ...)
    answer: str | None = None  # what a real client got back
    gave_up: str | None = None  # the finality watcher's reason (lab.guest.finality)
    bulk_bytes: int = 0  # B16: bytes sent after the payload, timed from `bulk_started`
    bulk_started: float | None = None
    xfrm_errors: dict = field(default_factory=dict)  # the receiver's XFRM counters (tamper)


@dataclass(eq=False)
class Results(Record):
    """What the executor saw: outcomes, what listeners received, SAs, XFRM, logs' events."""

    run_id: str
    timings: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    probes: list[Outcome] = field(default_factory=list)
    received: list[dict] = field(default_factory=list)
    sas: dict = field(default_factory=dict)
    policies: dict = field(default_factory=dict)
    xfrm: dict = field(default_factory=dict)
    events: dict = field(default_factory=dict)
    soft_sas: dict = field(default_factory=dict)
    firewall: dict = field(default_factory=dict)  # firewall counters per host (B7)
    held_replies: dict = field(default_factory=dict)  # per guarded host: clear replies held back
    failover: dict | None = None
    notes: list[str] = field(default_factory=list)
    given_up: list | None = None
    host_checks: dict | None = None  # the Docker provider's checks per host
    docker: dict | None = None
    module_requests: list[str] | None = None
    namespaces_left: list[str] | None = None
    bring_up_steps: dict = field(default_factory=dict)
    collect_steps: dict = field(default_factory=dict)
    cpu_steps: dict = field(default_factory=dict)  # the lab kernel's CPU seconds per step, by whom
    boot_marks: dict | None = None  # a UML guest's boot, step by step (guest uptime)
    format: int = RESULTS_FORMAT

    def outcome(self, probe_id: str) -> Outcome | None:
        return next((o for o in self.probes if o.id == probe_id), None)

    def to_json(self) -> dict:
        # Absent, not null, where a run had nothing to say (the report's executor.json).
        return {k: v for k, v in super().to_json().items() if v is not None}

    @classmethod
    def _decode(cls, name: str, value: Any, where: str) -> Any:
        if name == "probes":
            return [Outcome.from_json(o, f"{where}: probes[{i}]") for i, o in enumerate(_list(value, where, name))]
        if name == "format" and value != RESULTS_FORMAT:
            raise ContractError(f"{where}: results format {value!r}, this lab reads format {RESULTS_FORMAT}")
        return value


def _list(value: Any, where: str, name: str) -> list:
    if not isinstance(value, list):
        raise ContractError(f"{where}: {name}: expected a list, got {type(value).__name__}")
    return value


# ---- files: written once, checked when read ------------------------------------------------

def write_plan(path: str, plan: Plan) -> None:
    """Once, and only a complete (frozen) plan."""
    if not plan.__dict__.get("_frozen"):
        raise ContractError(f"{path}: the plan must be frozen (complete) before it is written")
    _write_once(path, plan.to_json())


def read_plan(path: str) -> Plan:
    plan = Plan.from_json(_read(path), path)
    plan.freeze()
    return plan


def write_results(path: str, results: Results) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results.to_json(), f, indent=1)
    os.replace(tmp, path)


def read_results(path: str) -> Results:
    return Results.from_json(_read(path), path)


def _write_once(path: str, data: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)


def _read(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ContractError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None
