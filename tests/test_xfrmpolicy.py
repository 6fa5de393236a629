"""The kernel's choice of XFRM policy for a packet in clear, from `ip xfrm policy list` text."""

from __future__ import annotations

from lab.guest.xfrmpolicy import ACCEPTED, CLEAR, HELD, REFUSED, UNKNOWN, decide, parse

# As iproute2 6.1 prints what charon installs for a trap (fe, Require ESP on tcp/80 to be), a
# pass shunt, a socket policy of charon's IKE socket, and a relaxed (`level use`) inbound one.
LISTING = """\
src 10.10.1.10/32 dst 10.10.2.20/32 proto tcp dport 80 
\tdir out priority 366975 ptype main 
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 1 mode transport
src 10.10.2.20/32 dst 10.10.1.10/32 proto tcp sport 80 
\tdir in priority 366975 ptype main 
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 1 mode transport
src 10.10.1.10/32 dst 10.10.2.0/24 proto tcp dport 25 
\tdir out priority 300000 ptype main 
src 0.0.0.0/0 dst 10.10.1.10/32 proto tcp dport 443 
\tdir in priority 200000 ptype main 
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 2 mode transport
\t\tlevel use 
src 10.10.9.0/24 dst 0.0.0.0/0 
\tdir out action block priority 100 ptype main 
src 0.0.0.0/0 dst 0.0.0.0/0 
\tsocket in priority 0 ptype main 
"""


def test_a_trapped_flow_is_held_others_leave_in_clear():
    pols = parse(LISTING)
    assert len(pols) == 6 and pols[0]["templates"] == [{"required": True, "reqid": 1}]
    assert decide(pols, "out", "10.10.1.10", "10.10.2.20", 6, None, 80) == HELD
    assert decide(pols, "out", "10.10.1.10", "10.10.2.20", 6, None, 25) == CLEAR  # pass shunt
    assert decide(pols, "out", "10.10.1.10", "10.10.2.20", 17, None, 80) == CLEAR  # no policy
    assert decide(pols, "out", "10.10.9.5", "10.10.2.20", 6, None, 80) == HELD  # block


def test_inbound_required_refuses_clear_optional_accepts():
    pols = parse(LISTING)
    assert decide(pols, "in", "10.10.2.20", "10.10.1.10", 6, 80, 40000) == REFUSED
    assert decide(pols, "in", "203.0.113.22", "10.10.1.10", 6, None, 443) == ACCEPTED  # level use
    assert decide(pols, "in", "203.0.113.22", "10.10.1.10", 6, None, 22) == ACCEPTED  # no policy


def test_what_depends_on_the_unknown_source_port_is_unknown():
    pols = parse(LISTING)
    # be's answer from port 80 is refused, but a probe from be with an unknown source port may
    # or may not be port 80: the watcher must not decide.
    assert decide(pols, "in", "10.10.2.20", "10.10.1.10", 6, None, 40000) == UNKNOWN


def test_lowest_priority_wins_and_a_disagreeing_tie_is_unknown():
    text = ("src 10.10.1.10/32 dst 10.10.2.0/24 \n\tdir out priority 10 ptype main \n"
            "src 10.10.1.10/32 dst 10.10.2.20/32 \n\tdir out priority 20 ptype main \n"
            "\ttmpl src 0.0.0.0 dst 0.0.0.0\n\t\tproto esp reqid 1 mode transport\n")
    assert decide(parse(text), "out", "10.10.1.10", "10.10.2.20", 6, None, 80) == CLEAR
    tie = text.replace("priority 20", "priority 10")
    assert decide(parse(tie), "out", "10.10.1.10", "10.10.2.20", 6, None, 80) == UNKNOWN
    dev = text.replace("10.10.2.0/24 ", "10.10.2.0/24 dev eth0 ")  # bound to a device: not known here
    assert decide(parse(dev), "out", "10.10.1.10", "10.10.2.20", 6, None, 80) == UNKNOWN
