"""Would IKE between two hosts bring up an SA for a flow, and with which protocol?

The initiator's Negotiate rule offers its selectors and security methods. The responder
answers with its most specific Negotiate rule whose filter overlaps the offer (the SA is then
narrowed to that rule: strongSwan narrows where Windows would refuse, B15), else with its
default response rule (Respond Only), which takes the offer as it is and accepts its own
policy's methods, the modern defaults and the Windows default methods. It chooses by its own
order of preference. Silence (no IPsec, IKE blocked on the way) is not failure: only silence
lets a Request rule fall back to clear (soft SA). Certificates must be present and not revoked
on both sides (B11); AH cannot be carried through NAT (B8).
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.compile.proposals import (DEFAULT_AH, DEFAULT_ESP, WINDOWS_RESPONSE_AH, WINDOWS_RESPONSE_ESP,
                                   method_proposals, methods)
from lab.model.topology import Host, IPv4Address, Rule, Topology
from lab.predict import path
from lab.predict.decide import Packet, describe, matches, sides, weight


@dataclass(frozen=True)
class Negotiation:
    outcome: str  # "established" | "silent" (nobody answered) | "refused" (answered, failed)
    responder: str  # what answers on the responder: "rule x (require esp)", "default response rule"
    reason: str
    protocol: str | None = None  # "esp" | "ah" once established
    covers_flow: bool = True  # False: the SA was narrowed to selectors that leave the flow out


def _as_offers(security) -> list[tuple[str, str]]:
    """(protocol, proposal) for each security method, in order."""
    return [(key.split("_")[0], p) for m in security for key, props in method_proposals([m]).items() for p in props]


def offers(rule: Rule) -> list[tuple[str, str]]:
    """(protocol, proposal) in the rule's order of preference."""
    return _as_offers(methods(rule))


def default_response_offers(topology: Topology, host: Host) -> list[tuple[str, str]]:
    """What the default response rule accepts: the methods set for it (`default_response:
    {security: [...]}`) and nothing else, or the policy's own, the modern and the Windows ones."""
    policy = topology.policy(host.policy)
    if policy.respond_security:
        listed = _as_offers(policy.respond_security)
        return [o for o in listed if o[0] == "esp"] + [o for o in listed if o[0] == "ah"]
    out: list[tuple[str, str]] = []
    for rule in policy.rules:
        if rule.negotiates:
            out += [o for o in offers(rule) if o not in out]
    for proto, props in (("esp", DEFAULT_ESP + WINDOWS_RESPONSE_ESP), ("ah", DEFAULT_AH + WINDOWS_RESPONSE_AH)):
        out += [(proto, p) for p in props if (proto, p) not in out]
    return out


def _overlap(a, b) -> bool:
    return any(x.overlaps(y) for x in a for y in b)


def _compatible(x, y) -> bool:
    return x is None or y is None or x == y


def answering_rule(topology: Topology, initiator: Host, rule: Rule, responder: Host,
                   packet: Packet | None = None) -> Rule | None:
    """The responder's Negotiate rule for what the initiator offers: among its rules whose filter
    overlaps the offer, one that takes the packet that started the negotiation (charon picks the
    CHILD_SA configuration that covers the proposal's first, packet-specific selectors), the most
    specific first; otherwise the most specific overlapping rule, and the SA is narrowed to it."""
    offer = sides(topology, initiator, rule)
    found = []
    for i, r in enumerate(topology.policy(responder.policy).rules):
        if not r.negotiates or bool(r.tunnel_endpoint) != bool(rule.tunnel_endpoint):
            continue
        if r.tunnel_endpoint and r.tunnel_endpoint != initiator.name:
            continue
        mine = sides(topology, responder, r)
        if (_overlap(mine.mine, offer.theirs) and _overlap(mine.theirs, offer.mine)
                and _compatible(r.filter.protocol, rule.filter.protocol)
                and _compatible(mine.my_port, offer.their_port) and _compatible(mine.their_port, offer.my_port)):
            takes = packet is not None and matches(topology, responder, r, packet, False)
            found.append(((not takes, *weight(topology, responder, r, i)), r))
    if not found:
        return None
    best = min(found, key=lambda f: f[0])
    # A rule that only overlaps the offer loses to the default response rule, whose dynamic
    # selectors contain it: charon prefers the CHILD_SA configuration that covers the proposal
    # (as Windows answers with the default response rule when no filter matches).
    if best[0][0] and topology.policy(responder.policy).respond and not rule.tunnel_endpoint:
        return None
    return best[1]


def _certificates(topology: Topology, initiator: Host, responder: Host) -> str | None:
    if topology.auth_method != "certificates":
        return None
    for who, other in ((initiator, responder), (responder, initiator)):
        if who.certificate == "none":
            return f"{who.name} has no machine certificate: it cannot authenticate IKE"
        if who.certificate == "revoked":
            return f"{other.name} refuses {who.name}'s certificate: it was revoked (CRL)"
    return None


def negotiate(topology: Topology, initiator: Host, address: IPv4Address, rule: Rule,
              responder: Host, peer_address: IPv4Address, packet: Packet) -> Negotiation:
    """IKE from initiator (at address) for rule, to responder (at peer_address), triggered
    by packet (as the initiator sends it)."""
    if not responder.policy:
        return Negotiation("silent", "no IPsec policy", f"{responder.name} speaks no IPsec: nobody answers IKE")
    nat = path.crosses_nat(topology, initiator, responder)
    if why := path.blocked(topology, path.ike_packets(initiator, responder, address, peer_address, nat)):
        return Negotiation("silent", "IKE never arrives", f"IKE cannot pass: {why}")
    answer = answering_rule(topology, initiator, rule, responder, packet)
    policy = topology.policy(responder.policy)
    if answer is None and not (policy.respond and not rule.tunnel_endpoint):
        return Negotiation("refused", "no rule for this peer, no default response rule",
                           f"{responder.name} has no rule matching the offer and no default response rule")
    answers = describe(answer) if answer else "default response rule (Respond Only)"
    if why := _certificates(topology, initiator, responder):
        return Negotiation("refused", answers, why)
    accepted = offers(answer) if answer else default_response_offers(topology, responder)
    offered = offers(rule)
    chosen = next((a for a in accepted if a in offered), None)
    if chosen is None:
        return Negotiation("refused", answers, f"no acceptable proposal: {initiator.name} offers "
                           f"{_names(offered)}, {responder.name} accepts {_names(accepted)}")
    if chosen[0] == "ah" and nat:
        return Negotiation("refused", answers, "AH cannot cross NAT: its integrity covers the "
                           "addresses NAT rewrites (the kernel refuses AH in UDP)")
    covers = answer is None or bool(rule.tunnel_endpoint) or matches(topology, responder, answer, packet, False)
    return Negotiation("established", answers, f"{chosen[0].upper()} {chosen[1]}" + (" through NAT (UDP 4500)" if nat else ""),
                       chosen[0], covers)


def _names(items: list[tuple[str, str]]) -> str:
    return ", ".join(f"{p.upper()} {a}" for p, a in items[:4]) + (" ..." if len(items) > 4 else "")
