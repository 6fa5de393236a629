"""The reply guard of IKEv1 Respond Only hosts (lab.compile.reply_guard): which hosts get it,
what it installs, how its counter is read and how a verdict reports it."""

from __future__ import annotations

from pathlib import Path

from lab.compile import reply_guard
from lab.compile.plan import build_plan
from lab.contract import Results
from lab.guest.replyguard import parse_held
from lab.kernels import uml
from lab.model.load import load_topology
from lab.runner import held_replies

ROOT = Path(__file__).resolve().parent.parent / "topologies"


def _guarded(name: str) -> set[str]:
    plan = build_plan(load_topology(ROOT / f"{name}.yaml"), "t", "/nowhere")
    return {h.name for h in plan.hosts if h.reply_guard}


def test_only_ikev1_hosts_with_the_default_response_rule_are_guarded():
    # srv: Client (Respond Only); srv-null: a default response rule and no rules; the
    # initiators' policies keep the default response rule on too (Windows' default), and a
    # flow answered by it has no trap. The clear client and the router (no policy) are not.
    assert _guarded("protocols-under-ipsec-ikev1") == {"srv", "srv-null", "ah-near", "ah-far", "esp-near",
                                                        "null-near"}
    # The same hosts over IKEv2: the responder installs before it answers, no window.
    assert _guarded("exchange-fe-be-http") == set()


def test_the_guard_drops_only_clear_replies_of_connections_that_came_in_protected():
    rules = "\n".join(reply_guard.RULES)
    # Marked on the way in only when the packet came through an SA ...
    assert f"-A INPUT -m policy --dir in --pol ipsec -j CONNMARK --or-mark {reply_guard.MARK}" in rules
    # ... and dropped on the way out only for a reply of such a connection with no transform.
    out = next(r for r in reply_guard.RULES if r.startswith("-A OUTPUT"))
    for part in ("--ctdir REPLY", f"--mark {reply_guard.MARK}/{reply_guard.MARK}", "--dir out --pol none",
                 "-j lab-held-reply"):
        assert part in out
    # Nothing else is dropped: the chains' policies accept, the counting chain is the only drop.
    assert ":INPUT ACCEPT" in rules and ":OUTPUT ACCEPT" in rules
    assert [r for r in reply_guard.RULES if "DROP" in r] == ["-A lab-held-reply -j DROP"]


def test_the_boot_loads_the_guards_modules_only_when_a_host_is_guarded():
    def mods(name):
        return set(uml.modules_for(build_plan(load_topology(ROOT / f"{name}.yaml"), "t", "/x")).split())

    assert set(reply_guard.MODULES.split()) <= mods("protocols-under-ipsec-ikev1")
    assert not set(reply_guard.MODULES.split()) & mods("exchange-fe-be-http")


def test_the_held_counter_is_read_from_the_chain_listing():
    listing = ("Chain lab-held-reply (1 references)\n"
               "    pkts      bytes target     prot opt in     out     source               destination\n"
               "       3      180 DROP       0    --  *      *       0.0.0.0/0            0.0.0.0/0\n")
    assert parse_held(listing) == 3
    assert parse_held(listing.replace("       3      180", "       0        0")) == 0


def test_a_verdict_says_when_its_destination_held_replies_back():
    results = Results(run_id="t", held_replies={"srv": 3, "srv-null": 0})
    said = held_replies(results, "srv")
    assert said.startswith("srv held back 3 clear replies") and "IKEv1" in said
    assert held_replies(results, "srv-null") is None and held_replies(results, "esp-near") is None


class _RefusingSocket:
    """A UDP socket whose first reply a local policy refuses (EPERM), as the guard does."""

    def __init__(self, listeners, requests):
        self.listeners, self.requests, self.sent, self.refused = listeners, list(requests), [], 0

    def recvfrom(self, size):
        return self.requests.pop(0), ("10.10.1.12", 40000)

    def sendto(self, data, peer):
        if not self.refused:
            self.refused += 1
            raise PermissionError(1, "Operation not permitted")
        self.sent.append(data)


def test_a_udp_listener_survives_a_reply_the_guard_refused():
    # The prober resends every half second; the listener must still be there to answer it.
    from lab.guest.traffic import Listeners

    listeners = Listeners()
    sock = _RefusingSocket(listeners, [b"LABPROBE-1 x", b"LABPROBE-1 x"])
    for _ in range(2):  # the selector wakes the listener once per datagram
        listeners._datagram("srv", {"protocol": "udp", "port": 9999}, sock)
    listeners.stop()
    assert sock.refused == 1 and len(sock.sent) == 1
    assert len(listeners.received) == 2
