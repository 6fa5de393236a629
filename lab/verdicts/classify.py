"""Judge each expectation from the wire: what the captures, the prober and the SAs show.

The rules, in order:
1. The listener's answer never came back: `dropped`.
2. Any of the flow's own packets (its exact addresses, protocol and ports) crossed a network
   unprotected: `clear`.
3. Otherwise the IPsec packets attributed to the flow decide: AH around ESP `ah+esp`, AH `ah`,
   ESP `esp`. An ESP packet is attributed when its SPI belongs to a CHILD_SA whose traffic
   selectors cover the flow and it crossed between the two addresses while the probe ran; an
   AH packet shows its inner ports, so it is matched exactly, and ESP between the same two
   addresses in the same direction is then another flow's (one policy per direction: its
   template is AH or ESP, not both). The SA named as evidence is the one whose SPIs the AH
   packets carried, else the ESP packets.
   Unprotected packets without payload (a TCP handshake accepted in clear through inbound
   passthrough before IPsec took over) do not make a protected flow `clear`; they are counted
   in the evidence. A flow with only clear packets is `clear`.
4. Delivered, but nothing of it seen on any network: `unobserved`, which never passes.
   A probe the executor returned no outcome for is `not judged`, which never passes either.
5. Tampered flows (the router altered each protected packet) count as `dropped` only when the
   receiver's XFRM integrity counters rose: the drop must be the receiver's own verdict.
"""

from __future__ import annotations

import re

from lab.selectors import covers
from lab.model.services import PROTOCOL_NUMBERS
from lab.model.topology import Result
from lab.verdicts import realclient
from lab.verdicts.model import ChildSa, Evidence, Inconclusive, Observed, SaRef, SegmentCount, Verdict
from lab.verdicts.wire import Packet, has_readable

SLACK = 0.5  # seconds around a probe's lifetime in which its IPsec packets may be seen


def child_sas(sas: dict[str, list[dict]]) -> list[ChildSa]:
    """Flatten each host's list-sas answer into the rows of the Ipsecmon table."""
    rows = []
    for host, ike_list in sorted(sas.items()):
        for entry in ike_list:
            for ike_name, ike in entry.items():
                for child in ike.get("child-sas", {}).values():
                    rows.append(ChildSa(
                        host=host, ike=ike_name, peer=ike.get("remote-host", "?"),
                        child=child.get("name", "?"), state=child.get("state", "?"),
                        protocol=child.get("protocol", "?"), mode=child.get("mode", "?"),
                        algorithms=algorithms(child), spi_in=child.get("spi-in", ""),
                        spi_out=child.get("spi-out", ""),
                        bytes_in=int(child.get("bytes-in", 0)), bytes_out=int(child.get("bytes-out", 0)),
                        packets_in=int(child.get("packets-in", 0)), packets_out=int(child.get("packets-out", 0)),
                        local_ts=tuple(child.get("local-ts", [])), remote_ts=tuple(child.get("remote-ts", [])),
                        local=ike.get("local-host", ""),
                    ))
    return rows


def algorithms(child: dict) -> str:
    enc = child.get("encr-alg", "")
    if enc and child.get("encr-keysize"):
        enc += f"-{child['encr-keysize']}"
    integ = child.get("integ-alg", "")
    return "/".join(x for x in (enc, integ) if x) or "?"


def covering_sas(rows: list[ChildSa], probe: dict) -> list[ChildSa]:
    """Every SA on either host whose selectors cover the flow: when both peers initiate, each
    direction may travel in a CHILD_SA of its own. Then the SAs of tunnel gateways on the path
    (any other host) whose selectors cover the flow in either orientation (B10)."""
    proto, sport, dport = probe["protocol"], probe["sport"], probe["port"]
    if proto == "icmp":  # an echo has no ports (its id is not a selector): any ICMP selector covers it
        sport = dport = None
    ends = ((probe["src_address"], sport, probe["dst_address"], dport),
            (probe["dst_address"], dport, probe["src_address"], sport))
    found = []
    for host, (me, me_port, peer, peer_port) in zip((probe["src"], probe["dst"]), ends):
        for row in rows:
            if row.host == host and _covers(row, me, me_port, peer, peer_port, proto):
                found.append(row)
    for row in rows:
        if row.host not in (probe["src"], probe["dst"]) and row.mode.upper() == "TUNNEL" \
                and any(_covers(row, *e, proto) for e in ends):
            found.append(row)
    return found


def _covers(row: ChildSa, me: str, me_port: int | None, peer: str, peer_port: int | None, proto: str) -> bool:
    return any(covers(_ts(ts, proto), me, proto, me_port) for ts in row.local_ts) and \
        any(covers(_ts(ts, proto), peer, proto, peer_port) for ts in row.remote_ts)


def _ts(ts: str, proto: str) -> str:
    """ICMP selectors carry type and code where ports would be (`[icmp/8]`); an echo and its
    reply differ in type, so an ICMP flow is judged by the protocol alone."""
    return re.sub(r"\[icmp/[^\]]*\]", "[icmp]", ts) if proto == "icmp" else ts


def _is_flow(p: Packet, probe: dict, proto_num: int) -> bool:
    # Behind a NAT (B8) an address has a second name on the outside network.
    nat = probe.get("nat_aliases") or {}
    src = {probe["src_address"], nat.get(probe["src_address"])}
    dst = {probe["dst_address"], nat.get(probe["dst_address"])}
    a, b = p.flow_src, p.flow_dst  # the inner addresses of tunnel-mode AH
    if proto_num == 1:  # ICMP echo: the pair and the echo id
        return p.protocol == 1 and ((a in src and b in dst) or (a in dst and b in src)) \
            and p.sport == probe["sport"]
    sport, dport = probe["sport"], probe["port"]
    return p.protocol == proto_num and (
        (a in src and p.sport == sport and b in dst and p.dport == dport)
        or (a in dst and p.sport == dport and b in src and p.dport == sport))


def flow_packets(packets: list[Packet], probe: dict, sas: list[ChildSa]) -> list[Packet]:
    """The flow's own packets, and the ESP packets of the SAs covering it: each SA's SPIs,
    between the two hosts or between that SA's own endpoints (a tunnel gateway's leg, or a
    peer seen through NAT), while the probe ran."""
    proto_num = PROTOCOL_NUMBERS[probe["protocol"]]
    pairs = [{probe["src_address"], probe["dst_address"]}]
    pairs += [{sa.local, sa.peer} for sa in sas if sa.local]
    nat = probe.get("nat_aliases") or {}  # an SA's endpoints as seen beyond the NAT (B8)
    pairs += [{nat.get(sa.local, sa.local), nat.get(sa.peer, sa.peer)} for sa in sas if sa.local]
    spis = {spi for sa in sas for spi in (sa.spi_in, sa.spi_out)}
    start, end = probe["t_start"] - SLACK, (probe["t_end"] or probe["t_start"]) + SLACK
    own = (lambda p: p.kind in ("clear", "ah") and _is_flow(p, probe, proto_num))
    # The kernel sends each way of a flow through one policy, whose template names one
    # protocol: where the flow's own packets crossed in AH, ESP between the same two addresses
    # carried other flows (concurrent probes on a wider SA that covers this flow too).
    in_ah = {(p.src, p.dst) for p in packets if p.kind == "ah" and own(p)}
    return [p for p in packets if own(p) or (
        p.kind == "esp" and p.spi in spis and {p.src, p.dst} in pairs and start <= p.time <= end
        and (p.src, p.dst) not in in_ah)]


def carrier(covering: list[ChildSa], mine: list[Packet]) -> ChildSa | None:
    """The SA named as evidence: the one whose SPIs the flow's own packets carried. AH shows
    the flow's ports, so its SPIs name the SA exactly; ESP is attributed by SA and time only,
    so it decides only when no AH packet does. When both peers initiated, an idle twin covers
    the flow too (seen: a ping each way between two hosts); when a port rule and an
    all-traffic rule cover one flow, the wider SA carried the other flows running meanwhile.
    When the flow crossed two SAs, the one that carried most of its packets is named (seen: an
    IKEv1 responder's trap fired by its own reply during the install window negotiated a
    second SA; the first carried the opening packet only and was closed as redundant)."""
    for kinds in (("ah",), ("ah", "esp")):
        spis = [p.spi for p in mine if p.kind in kinds and p.spi]

        def carried(r: ChildSa) -> int:
            return sum(s in (r.spi_in, r.spi_out) for s in spis)

        row = max(covering, key=carried, default=None)  # the first of equals, as listed
        if row and carried(row):
            return row
    return covering[0] if covering else None


def observe(delivered: bool, mine: list[Packet]) -> Observed:
    if not delivered:
        return Result.DROPPED
    kinds = {p.kind for p in mine}
    protected = kinds & {"esp", "ah"}
    if any(p.kind == "clear" and (p.payload or not protected) for p in mine):
        return Result.CLEAR
    if "ah" in kinds:
        return Result.AH_ESP if any(p.inner_esp for p in mine if p.kind == "ah") else Result.AH
    if "esp" in kinds:
        return Result.ESP
    return Inconclusive.UNOBSERVED


def _segments(networks: list[str], mine: list[Packet]) -> tuple[SegmentCount, ...]:
    out = []
    for net in networks:
        here = [p for p in mine if p.network == net]
        if here:
            out.append(SegmentCount(net, clear=sum(p.kind == "clear" for p in here),
                                    esp=sum(p.kind == "esp" for p in here), ah=sum(p.kind == "ah" for p in here)))
    return tuple(out)


def _ike_text(ev: Evidence, dropped: bool = False) -> list[str]:
    out = []
    if ev.soft_sa:
        out.append(ev.soft_sa)
    if ev.ike == "failed" and ev.ike_reasons:
        out.append("IKE failed: " + "; ".join(ev.ike_reasons[:3]))
    elif dropped and ev.ike_reasons:  # IKE up between the two, but a CHILD_SA for this flow failed
        out.append("a CHILD_SA failed: " + "; ".join(ev.ike_reasons[:3]))
    return out


def reason(observed: Observed, ev: Evidence, timeout: float, firewalled: bool = False) -> str:
    if observed in (Result.DROPPED, Inconclusive.DROPPED_ELSEWHERE):
        why = ev.error or "no answer"
        heard = "the listener got it but the answer was lost" if ev.received_by_server else "never reached the listener"
        parts = [f"not delivered ({why} after {ev.seconds:.1f} s of {timeout:.0f})", heard]
        if ev.answered_by:
            parts.append(ev.answered_by)
        if ev.dropped_by:
            parts.append(ev.dropped_by)
        elif firewalled:  # the topology has a firewall, and it let this flow's packets by
            parts.append("not dropped at a firewall: host policy")
        if ev.xfrm_errors:
            parts.append("receiver XFRM: " + ", ".join(f"{k} +{v}" for k, v in sorted(ev.xfrm_errors.items())))
        return "; ".join(parts + _ike_text(ev, dropped=True) + ([ev.held_replies] if ev.held_replies else []))
    parts = [f"delivered in {ev.seconds:.2f} s"] + ([ev.answered_by] if ev.answered_by else [])
    if ev.throughput_mbps is not None:
        parts.append(f"{ev.bulk_bytes // 1024} KiB at {ev.throughput_mbps:g} Mbit/s")
    if ev.clear_packets and observed is not Result.CLEAR and ev.clear_handshake:
        # Payload-less (a handshake, an ACK): no data of the flow crossed in clear. Whether inbound
        # passthrough let them in or a responder answered before its policies were installed
        # (docs/semantics.md) is not the classifier's to say: only the count is.
        parts.append(f"{ev.clear_handshake} payload-less packets in clear before IPsec took over")
    elif ev.clear_packets:
        parts.append(f"{ev.clear_packets} packets in clear")
    if ev.esp_packets:
        parts.append(f"{ev.esp_packets} ESP packets (SPI {', '.join(ev.spis)})")
    if ev.ah_packets:
        parts.append(f"{ev.ah_packets} AH packets")
    if ev.sa:
        parts.append(f"SA {ev.sa.child} on {ev.sa.host}, {ev.sa.protocol} {ev.sa.mode.lower()} {ev.sa.algorithms}")
    if ev.ike_seconds is not None and (ev.esp_packets or ev.ah_packets):
        parts.append(f"IKE up {ev.ike_seconds:.2f} s after the first packet" if ev.ike_seconds
                     else "SA up before the first packet")
    if ev.firewall_passed:
        parts.append(ev.firewall_passed)
    parts.append("marker readable on the wire" if ev.marker_in_clear else "marker never readable")
    if ev.credential_in_clear:
        parts.append("fake credential readable")
    if observed is Inconclusive.UNOBSERVED:
        parts.append("no packet of this flow was captured")
    # A delivered flow: the pair's IKE failures, if any, concerned other flows; only a fallback
    # to clear explains something about this one. A negotiation between the two that ran out of
    # retransmits is a retry (Windows retries too): never hidden behind a pass.
    retried = [r for r in ev.ike_reasons if "giving up after" in r]
    if retried:
        parts.append("IKE between the two retried (" + "; ".join(retried[:2]) + ")")
    return "; ".join(parts + [t for t in (ev.soft_sa, ev.held_replies) if t])


def _throughput(outcome: dict) -> float | None:
    """Mbit/s of a delivered bulk probe, from connect to the listener's answer (B16)."""
    if not outcome.get("bulk_bytes") or not outcome.get("delivered") or not outcome.get("t_reply"):
        return None
    seconds = outcome["t_reply"] - outcome["bulk_started"]
    return round(outcome["bulk_bytes"] * 8 / seconds / 1e6, 2) if seconds > 0 else None


def judge(probe: dict, outcome: dict, received: list[dict], packets: list[Packet], rows: list[ChildSa],
          networks: list[str], expectation, ike=None, soft_sa: str | None = None,
          firewall=None, answered_by: str | None = None, held_replies: str | None = None) -> Verdict:
    """`firewall`: a lab.verdicts.firewall.FirewallJudge, when the topology has firewalls.
    `answered_by`: for a flow to a cluster, which node answered (probe["dst"] is that node)."""
    probe = {**probe, **{k: outcome[k] for k in ("sport", "t_start", "t_end")}}
    if probe.get("client"):  # a real client may not know its port: read it from the wire
        probe["sport"] = realclient.client_port(probe, packets)
    covering = covering_sas(rows, probe)
    mine = flow_packets(packets, probe, covering)
    row = carrier(covering, mine)
    delivered = bool(outcome["delivered"])
    t_done = outcome["t_reply"] or outcome["t_end"]
    ev = Evidence(
        flow=f"{probe['protocol']} {probe['src_address']}:{probe['sport']} -> {probe['dst_address']}:{probe['port']}",
        delivered=delivered,
        received_by_server=any(r["marker"] == probe["marker"] for r in received),
        error=outcome["error"],
        seconds=round(t_done - outcome["t_start"], 3),
        segments=_segments(networks, mine),
        spis=tuple(sorted({p.spi for p in mine if p.spi})),
        sa=SaRef(row.host, row.ike, row.child, row.protocol, row.mode, row.algorithms, row.spi_in,
                 row.spi_out, row.local_ts, row.remote_ts) if row else None,
        marker_in_clear=has_readable(packets, probe["marker"].encode()),
        credential_in_clear=has_readable(packets, probe["credential_on_wire"].encode()),
        ike=ike.state if ike else None,
        ike_reasons=ike.reasons if ike else (),
        ike_seconds=ike.seconds_after(outcome["t_start"]) if ike else None,
        soft_sa=soft_sa,
        clear_handshake=sum(1 for p in mine if p.kind == "clear" and not p.payload),
        xfrm_errors=outcome.get("xfrm_errors", {}),
        bulk_bytes=outcome.get("bulk_bytes", 0),
        throughput_mbps=_throughput(outcome),
        dropped_by=firewall.where_dropped(probe, packets) if firewall and not delivered else None,
        firewall_passed=firewall.passed(probe) if firewall and delivered else None,
        answered_by=answered_by,
        held_replies=held_replies,
    )
    observed = observe(delivered, mine)
    observed = realclient.observed(observed, probe, outcome, ev)  # refused, tls (real clients)
    if probe.get("tamper") and observed is Result.DROPPED and not any(
            "Proto" in k or "Error" in k for k in ev.xfrm_errors):
        observed = Inconclusive.DROPPED_ELSEWHERE  # not the receiver's integrity check: proves nothing
    # The IKE outcome is a field of its own (expected_ike against evidence.ike), never text
    # folded into the result: the reason and the report read the result alone.
    return Verdict(
        id=expectation.id, source=expectation.source, destination=expectation.destination,
        service=expectation.service.name, expected=expectation.result, observed=observed,
        reason=realclient.reason(reason(observed, ev, probe["timeout"], bool(firewall)), probe, outcome,
                                 observed),
        evidence=ev,
        line=expectation.where.line if expectation.where else None,
        expected_ike=expectation.ike,
    )


def unjudged(probe: dict, expectation, errors: list[str]) -> Verdict:
    """The executor returned no outcome for this probe (it stopped early, or lost one): a failed
    verdict that names the expectation, so a report can never count fewer flows than it holds."""
    why = f"no outcome for probe {probe['id']} ({expectation.id}"
    why += f", line {expectation.where.line})" if expectation.where else ")"
    why += "; the executor reported: " + "; ".join(errors[:3]) if errors else "; the executor reported no error"
    ev = Evidence(flow=f"{probe['protocol']} {probe['src_address']} -> {probe['dst_address']}:{probe['port']}",
                  delivered=False, received_by_server=False, error="no outcome", seconds=0.0, segments=(),
                  spis=(), sa=None, marker_in_clear=False, credential_in_clear=False)
    return Verdict(
        id=expectation.id, source=expectation.source, destination=expectation.destination,
        service=expectation.service.name, expected=expectation.result, observed=Inconclusive.NOT_JUDGED,
        reason=why, evidence=ev, line=expectation.where.line if expectation.where else None,
        expected_ike=expectation.ike)
