"""Figures of one failover scenario, from the request log, the SA events and the captures.

- outage: from the last good answer before the move to the first good answer after it;
- new SA: from the move to the first CHILD_SA up between the client and the VIP (on the new node);
- cleartext: the service's own packets to or from the VIP crossing unprotected during the gap;
- stale SA: ESP packets the client kept sending with the old SA's outbound SPI after the move.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.verdicts.wire import Packet

# What the seed (KB 821839, KB 306677, the Exchange 2003 cookbook) says Windows takes.
WINDOWS_SHORT = {"planned": "3-6 s", "crash": "6 min (2000), 2 min (2003 NLB)"}
WINDOWS_FIGURES = {
    "planned": "about 3 to 6 s (planned move: SAs deleted, next packet renegotiates)",
    "crash": "6 min on Windows 2000 (5 min SA idle + 1 min Main Mode); 2 min on Windows 2003 with NLBSFlags=1",
}


@dataclass
class FailoverResult:
    name: str
    mode: str
    profile: str  # the client's timer profile, e.g. "fast" or "windows-2000 x0.05"
    max_seconds: float
    cleartext_policy: str
    outage: float | None
    new_sa_after: float | None
    cleartext_packets: int
    stale_sa_packets: int
    requests: int
    failed_requests: int
    answered_by: dict[str, int]  # node -> requests it answered
    steps: list[str]
    windows: str
    timeline: list[tuple[float, bool]] = field(default_factory=list)  # (seconds from the move, ok)
    sa_events: list[tuple[float, str]] = field(default_factory=list)
    line: int | None = None
    steady: str | None = None  # how the steady state before the move was reached, or why not
    steady_reached: bool = True
    run_id: str = ""
    kernel: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        if not self.steady_reached or self.outage is None or self.outage > self.max_seconds:
            return False
        return self.cleartext_policy == "allowed" or self.cleartext_packets == 0

    @property
    def reason(self) -> str:
        parts = []
        if not self.steady_reached:
            return f"no steady state before the move ({self.steady}): the VIP was not moved, nothing measured"
        if self.outage is None:
            parts.append("requests never succeeded again")
        else:
            verb = "within" if self.outage <= self.max_seconds else "over"
            parts.append(f"outage {self.outage:.2f} s ({verb} the {self.max_seconds:g} s allowed)")
        if self.new_sa_after is not None:
            parts.append(f"new SA with the VIP {self.new_sa_after:.2f} s after the move")
        parts.append(f"{self.cleartext_packets} cleartext packets to the VIP during the gap"
                     + (" (not allowed)" if self.cleartext_packets and self.cleartext_policy == "none" else ""))
        parts.append(f"{self.stale_sa_packets} packets into the stale SA")
        return "; ".join(parts)


def _child_ups(events: dict, vip: str) -> list[tuple[float, str, dict]]:
    """(time, host, child) for every CHILD_SA that came up with the VIP on either side."""
    out = []
    for host, per_host in events.items():
        for ev in per_host:
            if ev.get("event") != "child-updown" or ev["data"].get("up") != "yes":
                continue
            for ike in ev["data"].values():
                if isinstance(ike, dict) and vip in (ike.get("local-host"), ike.get("remote-host")):
                    for child in ike.get("child-sas", {}).values():
                        out.append((ev["t"], host, child))
    return sorted(out, key=lambda x: x[0])


def judge_failover(scenario: dict, fo: dict, events: dict, packets: list[Packet], profile: str,
                   received: list[dict], line: int | None = None) -> FailoverResult:
    t0 = fo["t_event"]
    reqs = fo["requests"]
    steady = fo.get("steady") or {"steady": True}
    steady_text = (f"steady {steady['after']:.1f} s after the start: CHILD_SA with the VIP up after "
                   f"{steady['sa_up_after']:.1f} s, requests answered through it" if steady["steady"] and "after" in steady
                   else steady.get("why"))
    if steady["steady"] and steady.get("ike_gave_up"):  # a retry, as Windows retries: said, not hidden
        steady_text += (f"; before that the client's IKE gave up {steady['ike_gave_up']} time(s) after its "
                        "retransmits and renegotiated on the next request")
    before = [r["t_done"] for r in reqs if r["ok"] and r["t_send"] < t0]
    after = [r["t_done"] for r in reqs if r["ok"] and r["t_send"] >= fo["t_event_done"]]
    last_good, first_good = (max(before) if before else None), (min(after) if after else None)
    outage = first_good - last_good if (last_good and first_good) else None

    ups = _child_ups(events, scenario["vip"])
    src = scenario["src"]
    old = [c for t, h, c in ups if h == src and t < t0]
    old_spi = old[-1].get("spi-out") if old else None
    new = [t for t, h, c in ups if t >= t0]
    gap_end = first_good or fo["deadline"]
    vip, port = scenario["vip"], scenario["port"]
    clear = sum(1 for p in packets if p.kind == "clear" and vip in (p.src, p.dst)
                and port in (p.sport, p.dport) and t0 <= p.time <= gap_end)
    stale = sum(1 for p in packets if p.kind == "esp" and p.dst == vip and p.spi == old_spi and p.time > t0)
    node_of = {r["marker"]: r["host"] for r in received}
    answered: dict[str, int] = {}
    for r in reqs:
        if r["ok"] and r["marker"] in node_of:
            answered[node_of[r["marker"]]] = answered.get(node_of[r["marker"]], 0) + 1
    return FailoverResult(
        name=scenario["name"], mode=scenario["mode"], profile=profile, max_seconds=scenario["max_seconds"],
        cleartext_policy=scenario.get("cleartext", "none"), outage=outage,
        new_sa_after=(new[0] - t0) if new else None, cleartext_packets=clear, stale_sa_packets=stale,
        requests=len(reqs), failed_requests=sum(1 for r in reqs if not r["ok"]), answered_by=answered,
        steps=list(fo["steps"]), windows=WINDOWS_FIGURES[scenario["mode"]],
        timeline=[(round(r["t_send"] - t0, 3), bool(r["ok"])) for r in reqs],
        sa_events=[(round(t - t0, 3), f"CHILD_SA up on {h} (SPI {c.get('spi-in', '?')})") for t, h, c in ups],
        line=line, steady=steady_text, steady_reached=bool(steady["steady"]),
    )
