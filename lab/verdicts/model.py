"""What one lab run concluded: a verdict per expectation, the SAs each host held, timings.

Every report writer (terminal table, JSON, JUnit, HTML) reads only these dataclasses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum

from lab.model.topology import Result


class Inconclusive(str, Enum):
    """What a verdict observed when the wire gave no `Result` to compare. Never a pass, and
    never something a topology may expect: the loader knows only `Result`, so these stay out
    of it."""

    UNOBSERVED = "unobserved"  # delivered, yet no packet of the flow was captured on any network
    NOT_JUDGED = "not judged"  # the executor returned no outcome for the probe
    DROPPED_ELSEWHERE = "dropped-elsewhere"  # tampered and lost, but not by the receiver's integrity check

    def __str__(self) -> str:
        return self.value


Observed = Result | Inconclusive


def observed_of(text: str) -> Observed:
    """A JSON report's `observed` back into its type: a Result, else one of the inconclusive."""
    try:
        return Result(text)
    except ValueError:
        return Inconclusive(text)


@dataclass(frozen=True)
class SegmentCount:
    """Packets of one flow seen on one network (capture), by kind."""

    network: str
    clear: int = 0  # the flow's own TCP/UDP packets, unprotected
    esp: int = 0  # ESP packets attributed to the flow (IP protocol 50, or ESP in UDP 4500)
    ah: int = 0  # AH packets attributed to the flow (IP protocol 51)


@dataclass(frozen=True)
class SaRef:
    """The CHILD_SA that carried (or should have carried) a flow, as `list-sas` showed it."""

    host: str
    ike: str
    child: str
    protocol: str  # ESP or AH
    mode: str  # TRANSPORT or TUNNEL
    algorithms: str  # e.g. AES_GCM_16-256 or AES_CBC-256/HMAC_SHA2_256_128
    spi_in: str
    spi_out: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]


@dataclass(frozen=True)
class Evidence:
    flow: str  # "tcp 10.10.1.10:49293 -> 10.10.2.20:80"
    delivered: bool  # the listener's answer came back to the prober
    received_by_server: bool  # the listener logged the probe's marker
    error: str | None  # the prober's socket error, e.g. "timed out"
    seconds: float  # from first send to answer (or to giving up)
    segments: tuple[SegmentCount, ...]
    spis: tuple[str, ...]  # SPIs of the IPsec packets attributed to this flow
    sa: SaRef | None
    marker_in_clear: bool  # the probe's marker was readable in some unprotected packet
    credential_in_clear: bool  # so was the fake login it carried
    ike: str | None = None  # "established" | "failed" between the two hosts during the run
    ike_reasons: tuple[str, ...] = ()  # what charon logged when negotiation failed
    ike_seconds: float | None = None  # the probe's first packet -> its CHILD_SA up (0: up already)
    soft_sa: str | None = None  # "fe fell back to clear for 10.10.2.20 after 3.0 s of IKE silence"
    clear_handshake: int = 0  # payload-less packets accepted in clear before IPsec took over
    xfrm_errors: dict = field(default_factory=dict)  # receiver's XFRM counter increases (tamper)
    bulk_bytes: int = 0  # B16: data sent after the marker, timed from connect to answer
    throughput_mbps: float | None = None
    dropped_by: str | None = None  # "dropped at firewall fw: ... filter 'default drop' counted 14"
    firewall_passed: str | None = None  # a delivered flow's allow filters and their counters
    answered_by: str | None = None  # to a cluster: "answered by be1 (node of mbx, VIP 10.10.2.20)"
    held_replies: str | None = None  # the destination's reply guard dropped clear replies (IKEv1 Respond Only)

    @property
    def clear_packets(self) -> int:
        return sum(s.clear for s in self.segments)

    @property
    def esp_packets(self) -> int:
        return sum(s.esp for s in self.segments)

    @property
    def ah_packets(self) -> int:
        return sum(s.ah for s in self.segments)


@dataclass(frozen=True)
class Verdict:
    id: str  # "fe->be:http", stable: the pytest case id
    source: str
    destination: str
    service: str
    expected: Result
    observed: Observed  # a Result, or why there is none (Inconclusive)
    reason: str  # one line a person can read: what the wire showed
    evidence: Evidence
    line: int | None = None  # the expectation's line in the topology file
    expected_ike: str | None = None  # "established" | "failed", when the expectation says

    def __post_init__(self) -> None:
        # A plain string here would compare unequal forever and fail quietly: refuse it early.
        if not isinstance(self.expected, Result) or not isinstance(self.observed, (Result, Inconclusive)):
            raise TypeError(f"Verdict {self.id}: expected must be a Result and observed a Result or "
                            f"Inconclusive, got {self.expected!r} and {self.observed!r}")

    @property
    def ike(self) -> str | None:
        """The IKE outcome between the two hosts during the run (the evidence's own record)."""
        return self.evidence.ike

    @property
    def ok(self) -> bool:
        # An inconclusive observation never passes, whatever was expected.
        return isinstance(self.observed, Result) and self.observed is self.expected \
            and (self.expected_ike is None or self.ike == self.expected_ike)

    @property
    def expected_text(self) -> str:
        """ "esp", or "esp, IKE established" when the expectation names the IKE outcome. """
        return f"{self.expected}, IKE {self.expected_ike}" if self.expected_ike else str(self.expected)

    @property
    def observed_text(self) -> str:
        """What was seen, in the words of `expected_text`, so the two columns compare."""
        return f"{self.observed}, IKE {self.ike or 'unknown'}" if self.expected_ike else str(self.observed)

    def to_dict(self) -> dict:
        """Plain JSON values: results as their strings, IKE expected and observed as fields."""
        d = asdict(self)
        d.update(expected=self.expected.value, observed=self.observed.value, ike=self.ike, ok=self.ok)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Verdict:
        """The inverse of to_dict (derived keys, `ok` and `ike`, are recomputed, not read)."""
        own = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in own}
        kw.update(expected=Result(d["expected"]), observed=observed_of(d["observed"]),
                  evidence=evidence_of(d["evidence"]))
        return cls(**kw)


def evidence_of(d: dict) -> Evidence:
    """Evidence from its JSON form: tuples where the dataclass has tuples."""
    sa = d.get("sa")
    return Evidence(**{
        **d,
        "segments": tuple(SegmentCount(**s) for s in d.get("segments", ())),
        "spis": tuple(d.get("spis", ())),
        "sa": SaRef(**{**sa, "local_ts": tuple(sa["local_ts"]), "remote_ts": tuple(sa["remote_ts"])}) if sa else None,
        "ike_reasons": tuple(d.get("ike_reasons", ())),
    })


@dataclass(frozen=True)
class ChildSa:
    """One row of the Ipsecmon-style table (B14): an installed CHILD_SA on one host."""

    host: str
    ike: str
    peer: str
    child: str
    state: str
    protocol: str
    mode: str
    algorithms: str
    spi_in: str
    spi_out: str
    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    local: str = ""  # this host's end of the IKE_SA (the outer address of its ESP packets)


@dataclass
class RunReport:
    topology: str
    description: str
    path: str
    run_id: str
    kernel: str  # e.g. "uml 7.2.7" or "host 6.1.0"
    started: str  # ISO 8601
    timings: dict[str, float]  # phase -> seconds (guest boot, bring-up, probes, collect, teardown, total)
    verdicts: list[Verdict]
    sas: list[ChildSa]
    ike_packets: dict[str, int] = field(default_factory=dict)  # network -> IKE packets seen
    errors: list[str] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path relative to report dir

    @property
    def ok(self) -> bool:
        return not self.errors and all(v.ok for v in self.verdicts)

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        d["verdicts"] = [v.to_dict() for v in self.verdicts]
        return d
