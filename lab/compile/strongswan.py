"""Compile one host's Windows-style policy into strongSwan connections (VICI `load-conn` dicts).

Pure functions, no I/O. The mapping, rule by rule:
- `require`  -> a transport-mode CHILD_SA with `start_action = trap`: the kernel holds an IPsec
               policy for the filter's selectors, the first matching packet makes charon
               negotiate, and nothing matching ever leaves in clear.
- `request`  -> the same trap; the executor adds the soft SA (a pass shunt for that peer) when the
               peer stays silent for the fallback time, as Windows does.
- inbound passthrough -> the executor relaxes the trap's inbound policy to an optional template
               (`level use`), so unsecured inbound is accepted while replies still need IPsec.
- `permit`   -> a `pass` shunt, `block` -> a `drop` shunt, both in a connection whose peer is
               127.0.0.1 so that no real peer can ever select it. Default exemptions likewise.
- respond    -> (Client (Respond Only), the default response rule) a child with dynamic
               selectors and `start_action = none`: nothing is installed until a peer asks, and
               then only the selectors the peer proposed.
Windows negotiates one Main Mode per pair of computers and one Quick Mode per filter; so each
Negotiate rule is a child, and a host's rules towards one peer share one IKE connection
(`peer-<host>`). Rules towards subnets or `any` and the default response rule share
`peer-any`, which accepts IKE from any peer. charon answers a peer from the one connection it
selected for it, so each named peer's connection also carries the default response child and,
answer-only, the subnet/any rules containing that peer.
Windows orders filters by weight, most specific first, whatever their action; strongSwan's own
priorities put every pass shunt above every IPsec policy. So each rule gets an explicit, unique
`priority` computed from its specificity (lower value = wins in the kernel), which also lets
the executor find a rule's kernel policies again.
"""

from __future__ import annotations

import ipaddress

from lab.compile.exemptions import exemption_children
from lab.compile.proposals import (DEFAULT_AH, DEFAULT_ESP, WINDOWS_RESPONSE_AH, WINDOWS_RESPONSE_ESP,
                                   child_lifetimes, child_proposals, ike_proposals, method_proposals)
from lab.model.services import PROTOCOL_NUMBERS
from lab.model.topology import Action, Endpoint, Filter, Host, Policy, Rule, Topology

def certificate_id(host: str) -> str:
    """The identity a host's machine certificate carries (lab.pki: subject CN = host name),
    in strongSwan's notation."""
    return f"CN={host}"


SHUNT_CONN = "shunts"  # never selected by a real peer: its remote is 127.0.0.1
ANY_PEER = "any"  # rules towards subnets or any, and the default response rule
RESPOND_CHILD = "respond"


def traffic_selectors(prefixes, protocol: str | None, port: int | None) -> list[str]:
    """strongSwan TS strings, e.g. `10.10.2.20/32[tcp/80]`; `[tcp]` for any port."""
    if protocol is None:
        suffix = ""
    elif port is None:
        suffix = f"[{protocol}]"
    else:
        suffix = f"[{protocol}/{port}]"
    return [f"{p}{suffix}" for p in prefixes]


def local_and_remote(host: Host, flt: Filter) -> tuple[list[str], list[str], Endpoint]:
    """Selectors seen from `host`: the `me` side is local. Returns (local_ts, remote_ts, peer)."""
    if flt.source.kind == "me":
        me, my_port, peer, peer_port = flt.source, flt.source_port, flt.destination, flt.destination_port
    else:
        me, my_port, peer, peer_port = flt.destination, flt.destination_port, flt.source, flt.source_port
    local = traffic_selectors(me.prefixes_for(host), flt.protocol, my_port)
    remote = traffic_selectors(peer.prefixes_for(host), flt.protocol, peer_port)
    return local, remote, peer


def priority(rule: Rule, host: Host, index: int = 0) -> int:
    """Windows filter weight as a unique kernel priority: more specific selectors win, ties go
    to block, then permit, then negotiate (the safe order), then to the earlier rule."""
    flt = rule.filter
    width = 0
    for ep in (flt.source, flt.destination):
        width += min((p.prefixlen for p in ep.prefixes_for(host)), default=0)
    specific = width * 8
    specific += 4 if (flt.source_port or flt.destination_port) else 0
    specific += 2 if flt.protocol is not None else 0
    tie = {Action.BLOCK: 0, Action.PERMIT: 1, Action.REQUIRE: 2, Action.REQUEST: 2}[rule.action]
    return 1000 + ((600 - specific) * 4 + tie) * 100 + index


def _peer_addresses(peer: Endpoint, host: Host) -> list[str]:
    """IKE peers of a Negotiate rule: the addresses when the peer side is hosts or /32s,
    otherwise any (charon takes the peer from the packet that triggered the trap)."""
    prefixes = peer.prefixes_for(host)
    if prefixes and all(p.prefixlen == 32 for p in prefixes):
        return [str(p.network_address) for p in prefixes]
    return ["%any"]


def ike_addresses(topology: Topology, host: Host) -> list[str]:
    """A cluster node also speaks IKE on its cluster's virtual IP (when it holds it)."""
    addrs = [str(a) for a in host.addresses]
    if host.cluster:
        addrs.append(str(topology.cluster(host.cluster).vip))
    return addrs


def timer_options(policy: Policy) -> dict[str, str]:
    """How a Negotiate rule notices that its peer vanished (a VIP that moved or a node that died).

    IKEv2 DPD starts only after `dpd_delay` without any inbound IKE/ESP packet: that is the
    Windows SA idle timer. After it, charon retries until its retransmission budget (set per
    host from the same profile) is spent, then restarts the negotiation: Windows' new Main Mode.
    A DELETE from the peer (a planned move) re-arms the trap at once.
    """
    t = policy.timers
    return {"dpd_delay": f"{t.idle_seconds:g}s"}


def _ike_common(topology: Topology, host: Host) -> dict:
    conn = {
        "version": str(topology.ike_version),
        "local_addrs": ike_addresses(topology, host),
        "proposals": ike_proposals(topology),
        "mobike": "no",  # stay on UDP 500 as Windows peers do; 4500 only for NAT traversal
    }
    if topology.ike_version == 1:
        conn["aggressive"] = "no"  # Main Mode, as Windows 2000/2003
    if host.cluster:
        # A cluster node keeps one SA per client, as a Windows node keeps one Main Mode SA per
        # peer. Seen on a loaded machine: a client gave up on a slow IKE_AUTH and renegotiated;
        # the node completed both, kept both CHILD_SAs, and sent every answer with the orphan's
        # SPI, which the client did not know: the VIP was dark for 30 s. A newer IKE_SA from
        # the same client now replaces the older one.
        conn["unique"] = "replace"
    else:
        # A host rule and a subnet rule to one peer start two IKE_SAs at once, each with
        # INITIAL_CONTACT; under the default (`no`) the responder then destroyed the other one
        # ("destroying duplicate IKE_SA ... received INITIAL_CONTACT") and its CHILD_SAs died
        # after DPD's retransmits (perpeer-port-and-all-ikev2, seen in the conformance suite).
        conn["unique"] = "never"
    if topology.ike_lifetime_minutes:
        # IKEv1 has no IKE rekeying: the Main Mode lifetime is a reauthentication time.
        conn["reauth_time" if topology.ike_version == 1 else "rekey_time"] = f"{topology.ike_lifetime_minutes}m"
    return conn


def peer_of(topology: Topology, host: Host, rule: Rule) -> str:
    """The computer a Negotiate rule talks IKE with, by name: a host or cluster (whether the
    filter names it or one of its addresses), the tunnel endpoint, other /32 addresses as
    written, or `any` when the far end is a subnet or any (the peer comes from the packet).
    Windows negotiates one Main Mode per pair of computers, so rules with the same peer share
    one IKE connection."""
    if rule.tunnel_endpoint:
        return rule.tunnel_endpoint
    _, _, far = local_and_remote(host, rule.filter)
    if far.kind in ("host", "cluster"):
        return far.text
    addrs = _peer_addresses(far, host)
    if addrs == ["%any"]:
        return ANY_PEER
    for h in topology.hosts:
        if set(addrs) <= {str(a) for a in h.addresses}:
            return h.name
    for c in topology.clusters:
        if addrs == [str(c.vip)]:
            return c.name
    return "+".join(addrs)


def connection_name(peer: str) -> str:
    """One IKE connection per peer: `peer-be`, `peer-mbx`, `peer-any`. The name is what charon
    tags its log lines and list-sas entries with."""
    return f"peer-{peer}"


def peer_groups(topology: Topology, host: Host) -> dict[str, list[tuple[int, Rule]]]:
    """The host's Negotiate rules by IKE connection name, each with its index in the policy
    (the index keeps kernel priorities unique), in policy order."""
    groups: dict[str, list[tuple[int, Rule]]] = {}
    for index, rule in enumerate(topology.policy(host.policy).rules):
        if rule.negotiates:
            groups.setdefault(connection_name(peer_of(topology, host, rule)), []).append((index, rule))
    return groups


def rule_child(topology: Topology, host: Host, rule: Rule, index: int) -> dict:
    """One Negotiate rule: one CHILD_SA (a Windows Quick Mode per filter), trapped."""
    local_ts, remote_ts, peer = local_and_remote(host, rule.filter)
    child = {
        "mode": "transport",
        "local_ts": local_ts,
        "remote_ts": remote_ts,
        "start_action": "trap",
        "priority": str(priority(rule, host, index)),
        "dpd_action": "restart",
        "close_action": "trap",
        **child_proposals(rule),
        **child_lifetimes(rule),
    }
    if rule.tunnel_endpoint:  # B10: the filter is the tunnel's inner traffic
        local_ts, remote_ts, _, _ = tunnel_ends(topology, host, rule)
        child.update(mode="tunnel", local_ts=local_ts, remote_ts=remote_ts)
    if _peer_addresses(peer, host) == ["%any"]:
        # Answering a peer, charon installs the CHILD_SA's policies with selectors narrowed to
        # that peer but the rule's explicit priority; on the tie the kernel prefers the trap's
        # older policy, whose dynamic reqid matches no SA (XfrmInTmplMismatch: the protected
        # SYN is dropped after decryption, the SYN-ACK triggers a new IKE). One fixed reqid
        # per rule (its unique priority) lets the trap and every SA of the rule agree.
        child["reqid"] = child["priority"]
    return child


def answer_only(child: dict) -> dict:
    """A rule towards a subnet or `any`, carried in a named peer's connection too: charon
    answers a peer from the one connection it picked for it (the named one), so the rule must
    be there to be found; its trap stays in `peer-any`, so this copy never initiates."""
    copy = {k: v for k, v in child.items() if k not in ("dpd_action", "close_action")}
    copy["start_action"] = "none"
    return copy


def _covers_peer(rule: Rule, host: Host, addresses: list[str]) -> bool:
    """Does the far end of this rule's filter contain one of the peer's addresses?"""
    _, _, far = local_and_remote(host, rule.filter)
    return any(ipaddress.ip_address(a) in net for a in addresses for net in far.prefixes_for(host))


def peer_addresses(topology: Topology, host: Host, peer: str, rules: list[Rule]) -> list[str]:
    """IKE addresses of a named peer: a host's addresses, a cluster's VIP, else as written."""
    if any(h.name == peer for h in topology.hosts):
        return [str(a) for a in topology.host(peer).addresses]
    if any(c.name == peer for c in topology.clusters):
        return [str(topology.cluster(peer).vip)]
    return _peer_addresses(local_and_remote(host, rules[0].filter)[2], host)


def peer_connection(topology: Topology, host: Host, peer: str, rules: list[tuple[int, Rule]],
                    any_rules: list[tuple[int, Rule]]) -> dict:
    """The IKE connection to one named peer: a child per rule towards it, then the rules towards
    subnets or `any` that contain it (answer only), then the default response rule, which
    answers what no filter matches, as Windows' does. charon's responder picks the child whose
    selectors match the proposal best (equal beats contained), so a rule's own child wins over
    the default response's dynamic one."""
    named = [r for _, r in rules]
    tunnels = [r for r in named if r.tunnel_endpoint]
    if tunnels:  # B10: IKE between the two tunnel endpoints' addresses on a shared network
        _, _, local_addr, peer_addr = tunnel_ends(topology, host, tunnels[0])
        local_addrs, remote_addrs, local_id = [local_addr], [peer_addr], local_addr
    else:
        local_addrs = ike_addresses(topology, host)
        remote_addrs = peer_addresses(topology, host, peer, named)
        # A cluster node answers as the VIP the peer contacted: no fixed identity.
        local_id = None if host.cluster else str(host.addresses[0])
    peer_host = peer if any(h.name == peer for h in topology.hosts) else None
    # A peer with several addresses may answer on any of them: its identity is then open.
    auth = authentication(topology, host, local_id, remote_addrs[0] if len(remote_addrs) == 1 else "%any",
                          peer_host)
    children = {r.name: rule_child(topology, host, r, i) for i, r in rules}
    for i, r in any_rules:
        if not r.tunnel_endpoint and _covers_peer(r, host, remote_addrs):
            children[r.name] = answer_only(rule_child(topology, host, r, i))
    if topology.policy(host.policy).respond:
        children[respond_child_name(children)] = respond_child(topology, host)
    return {
        **_ike_common(topology, host),
        "local_addrs": local_addrs,
        **timer_options(topology.policy(host.policy)),
        "remote_addrs": remote_addrs,
        **auth,
        "children": children,
    }


def any_connection(topology: Topology, host: Host, rules: list[tuple[int, Rule]]) -> dict:
    """Every peer no rule names: the rules towards subnets or `any` (their traps; charon takes
    the peer from the packet) and the default response rule (Client (Respond Only)), which
    accepts IKE from any peer and installs nothing until a peer asks, then only the selectors
    it proposed. One connection, so that whichever rule a peer asks for is found in it."""
    policy = topology.policy(host.policy)
    children = {r.name: rule_child(topology, host, r, i) for i, r in rules}
    if policy.respond:
        children[respond_child_name(children)] = respond_child(topology, host)
    # With rules, a fixed identity (as every rule connection has); answering only, none: the
    # responder is whatever address the peer contacted (a cluster node answers as its VIP).
    local_id = str(host.addresses[0]) if rules and not host.cluster else None
    return {
        **_ike_common(topology, host),
        **(timer_options(policy) if rules else {}),
        "remote_addrs": ["%any"],
        **authentication(topology, host, local_id, "%any"),
        "children": children,
    }


def authentication(topology: Topology, host: Host, local_id: str | None, remote_id: str,
                   peer_host: str | None = None) -> dict:
    """The `local-1`/`remote-1` rounds (plus certificate options) of a connection.

    psk: identities are IP addresses (local_id None = whatever address the peer contacted).
    certificates: each side proves itself with its machine certificate from the lab CA, loaded
    over VICI with its key (load-cert, load-key), identity = the certificate's subject
    (CN=host). A peer named in the filter must present its own certificate; any other peer
    any certificate of the lab CA, as Windows checks only the trusted root. `revocation:
    strict` makes charon consult the CA's CRL (loaded with load-cert) and refuse a peer when
    no revocation information is available at all.
    """
    if topology.auth_method != "certificates":
        local = {"auth": "psk", **({"id": local_id} if local_id else {})}
        return {"local-1": local, "remote-1": {"auth": "psk", "id": remote_id}}
    return {
        "send_cert": "always",  # the peer has only the CA; it needs ours in IKE_AUTH
        "local-1": {"auth": "pubkey", "id": certificate_id(host.name)},
        "remote-1": {"auth": "pubkey", "id": certificate_id(peer_host) if peer_host else "%any",
                     "revocation": "strict"},
    }


def tunnel_ends(topology: Topology, host: Host, rule: Rule) -> tuple[list[str], list[str], str, str]:
    """A tunnel rule seen from `host`: (local_ts, remote_ts, local address, peer address).

    The peer is the tunnel endpoint, reached on a network both share (else its first address).
    The remote selectors are the filter's end behind the peer: the side that is the endpoint or
    contains its address; the other side (or `me`) is local. A gateway thus protects others'
    traffic: the firewall's leg to the front-end has local = back-end, remote = front-end.
    """
    peer = topology.host(rule.tunnel_endpoint)
    flt = rule.filter
    shared = [i.network for i in host.interfaces if peer.address_on(i.network)]
    peer_addr = peer.address_on(shared[0]) if shared else peer.addresses[0]
    local_addr = host.address_on(shared[0]) if shared else host.addresses[0]
    ends = [(flt.source, flt.source_port), (flt.destination, flt.destination_port)]

    def behind_peer(ep) -> bool:
        return ep.text == peer.name or any(a in net for a in peer.addresses for net in ep.networks)
    if flt.source.kind == "me" or (flt.destination.kind != "me" and behind_peer(flt.destination)):
        (mine, my_port), (theirs, their_port) = ends
    else:
        (theirs, their_port), (mine, my_port) = ends
    local = traffic_selectors(mine.prefixes_for(host), flt.protocol, my_port)
    remote = traffic_selectors(theirs.prefixes_for(host), flt.protocol, their_port)
    return local, remote, str(local_addr), str(peer_addr)


def shunt_child(host: Host, rule: Rule, index: int) -> dict:
    local_ts, remote_ts, _ = local_and_remote(host, rule.filter)
    return {
        "mode": "pass" if rule.action is Action.PERMIT else "drop",
        "local_ts": local_ts,
        "remote_ts": remote_ts,
        "start_action": "trap",
        "priority": str(priority(rule, host, index)),
    }


def respond_child(topology: Topology, host: Host) -> dict:
    """The default response rule (Client (Respond Only)): accept what a peer proposes."""
    return {
        "mode": "transport",
        "local_ts": ["dynamic"],
        "remote_ts": ["dynamic"],
        "start_action": "none",
        **{key: offers for key, default in (("esp_proposals", DEFAULT_ESP + WINDOWS_RESPONSE_ESP),
                                            ("ah_proposals", DEFAULT_AH + WINDOWS_RESPONSE_AH))
           if (offers := _respond_offers(topology, host, key, default))},
    }


def respond_child_name(children: dict) -> str:
    """`respond`, unless a rule of the policy took that name."""
    return RESPOND_CHILD if RESPOND_CHILD not in children else f"{RESPOND_CHILD}-default"


# A responder goes along with the initiator's session-key PFS: each method is offered without
# PFS and with the usual groups (a proposal may list several; any one of them matches).
RESPOND_PFS = "-modp1024-modp768-modp2048-ecp256"


def _respond_offers(topology: Topology, host: Host, key: str, default: list[str]) -> list[str]:
    """The default response rule accepts the policy's own methods, then the modern defaults and
    the Windows default methods, each with or without PFS. Methods the administrator set
    (`default_response: {security: [...]}`) replace all of these: any other offer is refused."""
    policy = topology.policy(host.policy)
    if policy.respond_security:
        listed = method_proposals(policy.respond_security).get(key, [])
        return listed + [p + RESPOND_PFS for p in listed]
    offers: list[str] = []
    for rule in policy.rules:
        if rule.negotiates:
            offers += [p for p in child_proposals(rule).get(key, []) if p not in offers]
    offers += [p for p in default if p not in offers]
    return offers + [p + RESPOND_PFS for p in default]


def compile_host(topology: Topology, host: Host) -> dict[str, dict]:
    """All connections one IPsec host loads, by name. Empty for a host without a policy.

    One IKE connection per peer, one child per Negotiate rule towards it (Windows: one Main
    Mode per pair of computers, one Quick Mode per filter): `peer-<host or cluster>`, and
    `peer-any` for rules towards subnets or any plus the default response rule. Permit and
    block rules are shunts in `shunts`."""
    if not host.policy:
        return {}
    policy: Policy = topology.policy(host.policy)
    groups = peer_groups(topology, host)
    any_name = connection_name(ANY_PEER)
    any_rules = groups.pop(any_name, [])
    conns: dict[str, dict] = {}
    for name, rules in groups.items():
        conns[name] = peer_connection(topology, host, name.removeprefix("peer-"), rules, any_rules)
    shunts: dict[str, dict] = exemption_children(topology, host)
    for index, rule in enumerate(policy.rules):
        if not rule.negotiates:
            shunts[rule.name] = shunt_child(host, rule, index)
    if shunts:
        conns[SHUNT_CONN] = {
            "version": str(topology.ike_version),
            "remote_addrs": ["127.0.0.1"],
            "local-1": {"auth": "psk"},
            "remote-1": {"auth": "psk"},
            "children": shunts,
        }
    if any_rules or policy.respond:
        conns[any_name] = any_connection(topology, host, any_rules)
    return conns


def charon_settings(topology: Topology, host: Host) -> dict[str, str]:
    """strongswan.conf values for this host's daemon. Retransmissions are per daemon: a host
    whose policy uses Windows timers keeps retrying every second (at most) until its
    renegotiation budget is spent, as Windows gives a Main Mode up to a minute but retries
    within seconds (a 12 s interval made a planned move wait 12 s for its second attempt)."""
    if not host.policy:
        return {}
    t = topology.policy(host.policy).timers
    if t.name == "fast":
        if any(f.source == host.name for f in topology.failovers):
            # Where the profile's timing is the behaviour under test (a failover's client), keep
            # the budget it was measured with: after DPD's 1 s, 4 one-second retransmits. The
            # lab's default of 8 (the daemon's own, fitted to a loaded guest) would add 4 s.
            return {"retransmit_timeout": "1.000", "retransmit_tries": "4"}
        return {}
    interval = min(1.0, t.renegotiate_seconds / 5)
    tries = max(round(t.renegotiate_seconds / interval) - 1, 1)
    return {"retransmit_timeout": f"{interval:.3f}", "retransmit_tries": str(tries)}


def runtime_hints(topology: Topology, host: Host) -> dict:
    """What the executor must do beyond loading connections, in kernel terms:
    `inpass`: priorities of trap policies whose inbound side accepts unsecured packets;
    `fallback`: per IKE connection, when to install soft SAs for a silent peer, and one entry
    per request rule of that connection (its selectors, the peer's side as a suffix, which
    peers it covers, and the priority just above its trap)."""
    if not host.policy:
        return {"inpass": [], "fallback": {}}
    policy = topology.policy(host.policy)
    inpass, fallback = [], {}
    for conn, rules in peer_groups(topology, host).items():
        for index, rule in rules:
            prio = priority(rule, host, index)
            if rule.inbound_passthrough:
                inpass.append(prio)
            if rule.fallback_to_clear:
                local_ts, remote_ts, far = local_and_remote(host, rule.filter)
                suffix = remote_ts[0][remote_ts[0].find("["):] if "[" in remote_ts[0] else ""
                hint = fallback.setdefault(conn, {"seconds": policy.fallback_seconds, "children": []})
                hint["children"].append({"rule": rule.name, "local_ts": local_ts, "remote_suffix": suffix,
                                         "remote_prefixes": [str(p) for p in far.prefixes_for(host)],
                                         "priority": prio - 1})
    return {"inpass": sorted(inpass), "fallback": fallback}
