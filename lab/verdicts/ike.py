"""IKE between two hosts: did it come up, and if not, what did charon say?

Host side. Outcomes come from the SA events each charon reported (ike-updown) and from list-sas;
reasons come from the daemons' logs, where every line of an IKE_SA carries its tag
(`<peer-be|1>`), so a failure can be tied to the peer it concerned.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

# What charon logs when a negotiation fails, most telling first.
FAILURES = [
    # the kernel refused the negotiated SA (AH with UDP encapsulation behind a NAT, B8)
    r"unable to add SAD entry with SPI \w+ \(FAILED\)",
    # certificates (authentication: certificates): the responder's view, then the initiator's
    r"certificate was revoked on .*",
    r"certificate status is not available",
    r"no issuer certificate found for .*",
    r"certificate invalid \(valid from .*\)",
    r"no trusted \w+ public key found for .*",
    r"no private key found for .*",
    r"constraint check failed: .*",
    r"received NO_PROPOSAL_CHOSEN notify.*",
    r"no acceptable proposal found",
    r"received TS_UNACCEPTABLE notify.*",
    r"no acceptable traffic selectors found",
    r"traffic selectors .* unacceptable",
    r"received AUTHENTICATION_FAILED (?:error )?notify.*",  # IKEv1 says "error notify"
    r"tried \d+ shared keys? for .* but MAC mismatched",
    r"no matching peer config found",
    r"received INVALID_KE_PAYLOAD notify.*",
    r"giving up after \d+ retransmits",
    r"establishing CHILD_SA .* failed",
    r"failed to establish CHILD_SA.*",
]
_TAG = re.compile(r"\[\w+\] <([^>]+)> (.*)$")
_ADDR = re.compile(r"(?:to|from) (\d+\.\d+\.\d+\.\d+)")


@dataclass(frozen=True)
class IkeOutcome:
    established: bool
    reasons: tuple[str, ...]
    up_times: tuple[float, ...] = ()  # when a CHILD_SA between the two came up (initiator's view)

    def seconds_after(self, t: float) -> float | None:
        """How long after `t` (a probe's first packet) the first CHILD_SA came up; 0.0 when
        one was up already, None when none came up."""
        if not self.up_times:
            return None
        later = [u for u in self.up_times if u >= t]
        return round(min(later) - t, 3) if later else 0.0

    @property
    def state(self) -> str:
        return "established" if self.established else "failed"


def established_between(events: dict, sas: dict, a: str, b: str) -> bool:
    """Did a CHILD_SA (Windows: a Quick Mode SA) come up between a and b? An IKE_SA alone is
    not enough: with disjoint proposals IKE comes up and no traffic is ever protected."""
    pair = {a, b}
    for per_host in events.values():
        for ev in per_host:
            if ev.get("event") == "child-updown" and ev["data"].get("up") == "yes":
                for ike in ev["data"].values():
                    if isinstance(ike, dict) and {ike.get("local-host"), ike.get("remote-host")} == pair:
                        return True
    for entries in sas.values():
        for entry in entries:
            for ike in entry.values():
                if {ike.get("local-host"), ike.get("remote-host")} == pair and any(
                        c.get("state") == "INSTALLED" for c in ike.get("child-sas", {}).values()):
                    return True
    return False


_STAMP = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) ")
_CHILD_UP = re.compile(r"CHILD_SA \S+ established with SPIs")


def _ike_sa_lines(log: str):
    """(line, IKE_SA id, message, peer of each IKE_SA id seen so far) for every tagged line."""
    peer_of: dict[str, str] = {}
    for line in log.splitlines():
        m = _TAG.search(line)
        if not m:
            continue
        tag, msg = m.groups()
        # `<1>` until a config is chosen, then `<peer-any|1>`: one IKE_SA, keyed by its unique id.
        tag = tag.rpartition("|")[2]
        addr = _ADDR.search(msg)
        if addr and tag not in peer_of:
            peer_of[tag] = addr.group(1)
        yield line, tag, msg, peer_of


def established_by_peer(log: str) -> dict[str, list[float]]:
    """Seconds of the day (the log's local time, to the millisecond) at which a CHILD_SA came up
    in this log, by peer. Read from the log line charon writes as it installs the SA: the VICI
    event reaches the executor later, behind the probes' threads."""
    out: dict[str, list[float]] = {}
    for line, tag, msg, peer_of in _ike_sa_lines(log):
        stamp = _STAMP.match(line)
        if stamp and _CHILD_UP.search(msg) and tag in peer_of:
            h, mi, sec, ms = (int(x) for x in stamp.groups())
            out.setdefault(peer_of[tag], []).append(h * 3600 + mi * 60 + sec + ms / 1000)
    return out


def to_epoch(second_of_day: float, near: float) -> float:
    """A local time of day as the epoch time closest to `near` (a run never spans a day)."""
    lt = time.localtime(near)
    midnight = near - (lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec) - (near % 1)
    t = midnight + second_of_day
    return min((t - 86400, t, t + 86400), key=lambda x: abs(x - near))


def reasons_by_peer(log: str) -> dict[str, list[str]]:
    """Failure lines of every IKE_SA in this log, by the peer it concerned, in order, deduplicated."""
    peer_of: dict[str, str] = {}
    found: list[tuple[str, str]] = []
    for _line, tag, msg, peer_of in _ike_sa_lines(log):
        for pattern in FAILURES:
            hit = re.search(pattern, msg)
            if hit:
                found.append((tag, hit.group(0)))
                break
    out: dict[str, list[str]] = {}
    for tag, text in found:
        reasons = out.setdefault(peer_of.get(tag, ""), [])
        if text not in reasons:
            reasons.append(text)
    return out


def failure_reasons(log: str, peer: str) -> list[str]:
    """Failure lines of the IKE_SAs in this log that concerned `peer`, in order, deduplicated."""
    return reasons_by_peer(log).get(peer, [])


class IkeLogs:
    """A run's charon logs, each read and indexed by peer once, however many flows ask."""

    def __init__(self, logs_dir: str):
        self.logs_dir = logs_dir
        self._by_host: dict[str, dict[str, list[str]]] = {}
        self._up: dict[str, dict[str, list[float]]] = {}

    def _read(self, host: str) -> str:
        path = Path(self.logs_dir, f"charon-{host}.log")
        return path.read_text(errors="replace") if path.exists() else ""

    def reasons(self, host: str, peer: str) -> list[str]:
        if host not in self._by_host:
            self._by_host[host] = reasons_by_peer(self._read(host))
        return self._by_host[host].get(peer, [])

    def up_times(self, host: str, peer: str, near: float) -> tuple[float, ...]:
        """Epoch times at which `host` installed a CHILD_SA with `peer`."""
        if host not in self._up:
            self._up[host] = established_by_peer(self._read(host))
        return tuple(sorted(to_epoch(t, near) for t in self._up[host].get(peer, [])))


def outcome(results, logs: IkeLogs, src: tuple[str, str], dst: tuple[str, str],
            near: float | None = None) -> IkeOutcome:
    """src and dst are (host, address); `near`, any time in the run (for the logs' clock)."""
    up = established_between(results.events, results.sas, src[1], dst[1])
    reasons: list[str] = []
    for (host, _), (_, peer) in ((src, dst), (dst, src)):
        reasons += [f"{host}: {r}" for r in logs.reasons(host, peer)]
    # The sender's view decides when its packets could leave; the peer's when it is the other
    # side that initiated (a reply that needs IPsec).
    times = ()
    if near is not None:
        times = logs.up_times(src[0], dst[1], near) or logs.up_times(dst[0], src[1], near)
    return IkeOutcome(up, tuple(reasons), times)
