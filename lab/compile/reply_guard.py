"""The reply guard of an IKEv1 Respond Only host: no clear answer to a request it got protected.

Pure functions, no I/O. Why it exists (docs/semantics.md, "The IKEv1 responder's install
window"): charon answers a Quick Mode as responder only when the third message arrives, and
then installs the inbound SA, the outbound SA, the inbound policy and the outbound policy, in
that order (strongSwan 5.9.8 quick_mode.c install(), child_sa.c install_policies()). The
initiator installed before sending that message and releases the packets its trap held at
once: they can arrive between the SAs and the policies. The kernel decrypts them (a transport
SA needs no inbound policy) and a Respond Only host, which has no trap, answers in clear: no
outbound policy yet. Windows never answers a flow it accepted protected in clear.

The guard, in the responder's own kernel (iptables, as Debian's UML kernel has no IPv4
nftables family): a connection whose request arrived through IPsec is marked, and a reply of
that connection that would leave without a transform is dropped and counted. The sender
retries (TCP's SYN, the probes' half-second resends) into the SA, whose policies are in place
by then. A flow whose request came in clear is never touched, so no real clear flow is hidden;
a reply held back for good would turn a flow `dropped`, not `esp`, and the count is reported.
"""

from __future__ import annotations

from lab.model.topology import Host, Topology

MARK = "0x1000000"  # one bit of the conntrack mark; nothing else in the lab sets ct marks

# iptables-legacy-restore input: `*filter` with the two rules, and a named chain whose only
# rule counts what it drops (its counters are the report's figure).
RULES = [
    "*filter",
    ":INPUT ACCEPT [0:0]",
    ":OUTPUT ACCEPT [0:0]",
    ":lab-held-reply - [0:0]",
    f"-A INPUT -m policy --dir in --pol ipsec -j CONNMARK --or-mark {MARK}",
    f"-A OUTPUT -m conntrack --ctdir REPLY -m connmark --mark {MARK}/{MARK} "
    "-m policy --dir out --pol none -j lab-held-reply",
    "-A lab-held-reply -j DROP",
    "COMMIT",
]

MODULES = "nf_conntrack xt_conntrack xt_connmark xt_policy iptable_filter"


def needs_guard(topology: Topology, host: Host) -> bool:
    """Every IKEv1 host whose default response rule is on (Client (Respond Only), and any
    policy that keeps Windows' default): a flow it answers by that rule has no trap of its
    own. IKEv2's responder installs before it answers (no window), and for a flow of one of
    the host's rules the rule's trap already carries the reply into the SA, installed first."""
    return (topology.ike_version == 1 and bool(host.policy)
            and topology.policy(host.policy).respond)


def guard_plan(topology: Topology, host: Host) -> dict | None:
    return {"rules": list(RULES), "chain": "lab-held-reply"} if needs_guard(topology, host) else None
