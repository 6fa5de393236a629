"""When a waiting probe may stop: final evidence only, never silence, never a soft-SA host."""

from __future__ import annotations

import json
import os
import tempfile
import time

import pytest
from fakes import ScriptedVici

from lab.compile.plan import build_plan
from lab.guest import charon, finality
from lab.guest.finality import Finality, LogTail
from lab.guest.traffic import Deadline
from lab.model.load import load_topology


def _finality(name: str) -> tuple[Finality, dict]:
    plan = build_plan(load_topology(f"topologies/{name}.yaml"), "t", "/tmp/x")
    return Finality(plan, {}), plan


def test_the_responders_words_are_final_a_retransmit_is_not(tmp_path):
    log = tmp_path / "charon.log"
    log.write_text(
        "07:00:00.100 07[IKE] <rule-x|1> initiating IKE_SA rule-x[1] to 10.10.2.20\n"
        "07:00:01.100 07[IKE] <rule-x|1> retransmit 1 of request with message ID 0\n"
        "07:00:01.200 07[IKE] <rule-x|1> giving up after 8 retransmits\n")
    tail = LogTail(str(log))
    tail.read()
    assert tail.failed_with("10.10.2.20", 0) is None  # silence
    with log.open("a") as f:
        f.write("07:00:02.000 05[IKE] <rule-x|1> received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built\n"
                "07:00:02.000 05[IKE] <rule-x|1> half a line")
    tail.read()
    assert "NO_PROPOSAL_CHOSEN" in tail.failed_with("10.10.2.20", 0)
    assert tail.failed_with("10.10.9.9", 0) is None


def test_firewall_dropping_every_carrier_of_the_flow():
    fin, plan = _finality("firewall-missing-esp")
    http, kerberos = plan.probes
    assert fin._blocking_filters(http)  # TCP 80, ESP, AH, UDP 4500: all meet 'default drop'
    assert fin._blocking_filters(kerberos) is None  # allowed


def test_a_flow_whose_esp_would_pass_but_whose_ike_cannot():
    fin, plan = _finality("firewall-missing-ike")  # ESP allowed, UDP 500 not
    http, kerberos = plan.probes
    assert fin._blocking_filters(http) is None  # ESP itself would pass
    [(fw, f)] = fin._ike_blocked(http)
    assert fw == "fw" and f["action"] == "drop"
    assert fin._ike_blocked(kerberos)  # no IKE between fe and dc either, but kerberos leaves in clear:
    assert fin._static(kerberos)["clear"] is None  # its own packets pass, so it is never final


def test_hosts_with_a_soft_sa_fallback_always_wait():
    fin, plan = _finality("windows-default-policies")
    watched = {p["src"] for p in plan.probes if fin._watchable(p)}
    assert not any(h.startswith(("a-req", "b-req")) for h in watched)


# ---- the watcher itself: a probe given up on final evidence, and only then ------------------

def _counts(dropped: int) -> str:
    """`tc -s -j` output of firewall-missing-esp's fw: eth0 ingress's default drop counted `dropped`."""
    drop = [{"pref": 60000, "options": {"actions": [{"stats": {"packets": dropped, "bytes": 60 * dropped}}]}}]
    return "\n".join(json.dumps(x) for x in (drop, [], [], [])) + "\n"


def _wait(pred, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.02)
    return pred()


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(finality, "GRACE", 0.2)
    monkeypatch.setattr(finality, "POLL", 0.05)


def test_a_firewall_that_counted_the_drops_ends_the_wait_after_the_grace(kernel, quick):
    fin, plan = _finality("firewall-missing-esp")
    http, kerberos = plan.probes
    deadlines = {p["id"]: Deadline(30) for p in plan.probes}
    kernel.answer(r"tc -s -j -batch", _counts(0))
    fin.start(plan.probes, deadlines)
    try:
        time.sleep(0.3)
        assert deadlines[http["id"]].reason is None  # nothing counted yet: silence waits
        kernel.answer(r"tc -s -j -batch", _counts(3))
        assert _wait(lambda: deadlines[http["id"]].reason)
    finally:
        fin.stop()
    assert "filter 'default drop' counted packets" in deadlines[http["id"]].reason
    assert deadlines[kerberos["id"]].reason is None  # allowed: never cut short
    [given] = fin.given_up
    assert given["probe"] == http["id"] and given["given_up_after"] - given["final_after"] >= finality.GRACE


FE_TRAP = ("src 10.10.1.10/32 dst 10.10.2.20/32 proto tcp dport 80 \n\tdir out priority 366975 ptype main \n"
           "\ttmpl src 0.0.0.0 dst 0.0.0.0\n\t\tproto esp reqid 1 mode transport\n")


def test_a_refusal_in_the_log_ends_the_wait_once_nothing_still_negotiates(kernel, quick):
    plan = build_plan(load_topology("topologies/exchange-fe-be-http.yaml"), "t", "/tmp/x")
    kernel.answer(r"ip -n ns-fe xfrm policy list", FE_TRAP)  # fe's kernel holds its http to be
    with tempfile.TemporaryDirectory(prefix="lab") as work:  # VICI socket paths: 108 bytes at most
        charons = {name: charon.Charon(name, f"ns-{name}", work) for name in ("fe", "be")}
        servers = {}
        for name, c in charons.items():
            os.makedirs(c.dir)
            servers[name] = ScriptedVici(c.socket_path)
            with open(c.log_path, "w") as f:  # before the probes: not evidence
                f.write("07:00:00.000 05[IKE] <peer-be|1> initiating IKE_SA peer-be[1] to 10.10.2.20\n"
                        "07:00:00.100 05[IKE] <peer-be|1> received NO_PROPOSAL_CHOSEN notify error\n")
        for h in plan.hosts:
            if h["name"] in charons:
                h.ns = f"ns-{h.name}"
        servers["fe"].sas = [{"peer-be": {"uniqueid": "2", "state": "CONNECTING", "remote-host": "10.10.2.20"}}]
        fin = finality.Finality(plan, charons)
        [held] = [p for p in plan.probes if (p["src"], p["dst"], p["service"]) == ("fe", "be", "http")]
        deadlines = {p["id"]: Deadline(30) for p in plan.probes}
        fin.start(plan.probes, deadlines)
        try:
            time.sleep(0.3)
            assert not any(d.reason for d in deadlines.values())  # only old lines so far
            with open(charons["fe"].log_path, "a") as f:
                f.write("07:00:05.000 05[IKE] <peer-be|2> initiating IKE_SA peer-be[2] to 10.10.2.20\n"
                        "07:00:05.100 05[IKE] <peer-be|2> received NO_PROPOSAL_CHOSEN notify error\n")
            time.sleep(0.4)
            assert not any(d.reason for d in deadlines.values())  # an IKE_SA with be still negotiates
            # established, but a CHILD_SA is being created on it: that may yet succeed too
            servers["fe"].sas = [{"peer-be": {"uniqueid": "2", "state": "ESTABLISHED", "remote-host": "10.10.2.20",
                                              "tasks-active": ["CHILD_CREATE"]}}]
            time.sleep(0.4)
            assert not any(d.reason for d in deadlines.values())
            servers["fe"].sas = []
            assert _wait(lambda: deadlines[held["id"]].reason)
            time.sleep(0.3)
        finally:
            fin.stop()
            for s in servers.values():
                s.close()
    assert deadlines[held["id"]].reason == ("IKE failed: fe: received NO_PROPOSAL_CHOSEN notify error; "
                                            "fe's kernel sends it only protected")
    # fe->be smtp and be->fe http leave in clear: an IKE failure between the pair says nothing of them
    others = [p for p in plan.probes if p is not held]
    assert others and not any(deadlines[p["id"]].reason for p in others)
    assert {g["probe"] for g in fin.given_up} == {held["id"]}


def test_a_host_without_a_key_of_its_own_fails_for_good_despite_the_peers_half_open_sa(tmp_path):
    fin, plan = _finality("ipsec-restricted-publishing")
    tails = {}
    for name in ("nocert", "edge"):
        tails[name] = LogTail(str(tmp_path / f"{name}.log"))
    (tmp_path / "nocert.log").write_text(
        "10:31:24.209 13[IKE] <peer-edge|1> initiating IKE_SA peer-edge[1] to 10.20.1.10\n"
        "10:31:24.279 14[IKE] <peer-edge|1> no private key found for 'CN=nocert'\n")
    fin.tails = tails
    for t in tails.values():
        t.read()
    [nocert] = [p for p in plan.probes if p["src"] == "nocert"]
    half_open = [{"remote-host": "203.0.113.24", "state": "CONNECTING"}]
    fin._ikes = lambda host, peer: half_open if host == "edge" else []
    assert fin._ike_failed(nocert, 0) == "IKE failed: nocert: no private key found for 'CN=nocert'"
    fin._ikes = lambda host, peer: [{"remote-host": peer, "state": "ESTABLISHED"}]
    assert fin._ike_failed(nocert, 0) is None  # an IKE_SA up between them: not for us to judge


def test_a_daemon_that_does_not_answer_may_still_succeed(tmp_path):
    plan = build_plan(load_topology("topologies/exchange-fe-be-http.yaml"), "t", "/tmp/x")
    c = charon.Charon("fe", "ns-fe", str(tmp_path))  # no VICI socket at all
    fin = finality.Finality(plan, {"fe": c})
    assert fin._negotiating("fe", "10.10.2.20") is True
    assert fin._negotiating("legacy", "10.10.2.20") is False  # no charon: nothing negotiates


def test_nothing_to_watch_starts_no_thread():
    fin, plan = _finality("windows-default-policies")
    fin.start(plan.probes, {})
    assert fin._thread is None
    fin.stop()


# ---- the two dropped flows that used to wait out the 10 s --------------------------------

def test_ike_dropped_at_the_firewall_ends_the_wait_once_counted(kernel, quick):
    fin, plan = _finality("firewall-missing-ike")
    http, kerberos = plan.probes
    fe_ns = next(h["ns"] for h in plan.hosts if h["name"] == "fe")
    kernel.answer(rf"ip -n {fe_ns} xfrm policy list", FE_TRAP)
    fin._ikes = lambda host, peer: []  # no IKE_SA between fe and be, in any state
    deadlines = {p["id"]: Deadline(30) for p in plan.probes}
    kernel.answer(r"tc -s -j -batch", _counts(0))
    fin.start(plan.probes, deadlines)
    try:
        time.sleep(0.3)
        assert deadlines[http["id"]].reason is None  # nothing counted: silence waits
        kernel.answer(r"tc -s -j -batch", _counts(2))
        assert _wait(lambda: deadlines[http["id"]].reason)
    finally:
        fin.stop()
    assert deadlines[http["id"]].reason.startswith("firewall fw drops IKE (UDP 500) between them")
    assert deadlines[kerberos["id"]].reason is None


def test_ike_dropped_is_not_final_once_an_ike_sa_is_up(kernel):
    fin, plan = _finality("firewall-missing-ike")
    http = plan.probes[0]
    fin._ikes = lambda host, peer: [{"remote-host": peer, "state": "ESTABLISHED"}]
    kernel.answer(r"xfrm policy list", FE_TRAP)
    key = lambda f: (f["dev"], f["pref"])  # noqa: E731
    [(fw, f)] = fin._ike_blocked(http)
    assert fin.final(http, 0, {fw: {key(f): 5}}, {fw: {key(f): 0}}, {}, {}) is None


EDGE_IN = ("src 0.0.0.0/0 dst 10.20.1.10/32 proto tcp dport 443 \n\tdir in priority 200000 ptype main \n"
           "\ttmpl src 0.0.0.0 dst 0.0.0.0\n\t\tproto esp reqid 2 mode transport\n")


def test_clear_packets_refused_by_the_receivers_policy_end_the_wait_once_counted(kernel, quick, monkeypatch):
    fin, plan = _finality("ipsec-restricted-publishing")
    [kiosk] = [p for p in plan.probes if p["src"] == "kiosk"]
    edge_ns = next(h["ns"] for h in plan.hosts if h["name"] == "edge")
    kernel.answer(rf"ip -n {edge_ns} xfrm policy list", EDGE_IN)
    kernel.answer(r"tc -s -j -batch", "[]\n[]\n[]\n[]\n")
    refused = {"n": 0}
    monkeypatch.setattr(finality.xfrm, "stats", lambda ns: {"XfrmInTmplMismatch": refused["n"]} if ns == edge_ns else {})
    deadlines = {kiosk["id"]: Deadline(30)}
    fin.start([kiosk], deadlines)
    try:
        time.sleep(0.3)
        assert deadlines[kiosk["id"]].reason is None  # nothing refused yet
        refused["n"] = 4
        assert _wait(lambda: deadlines[kiosk["id"]].reason)
    finally:
        fin.stop()
    assert deadlines[kiosk["id"]].reason == "kiosk runs no IPsec; edge's kernel refuses it in clear"


def test_an_optional_inbound_template_accepts_clear_so_never_final(kernel):
    fin, plan = _finality("ipsec-restricted-publishing")
    [kiosk] = [p for p in plan.probes if p["src"] == "kiosk"]
    kernel.answer(r"xfrm policy list", EDGE_IN + "\t\tlevel use \n")
    assert fin.final(kiosk, 0, {}, {}, {"edge": {"XfrmInTmplMismatch": 9}}, {"edge": {}}) is None


# ---- tampered probes (lab.guest.tamper): final once the receiver refused altered packets ----

def test_a_tampered_flow_is_final_once_the_receiver_refused_it_and_the_sender_holds_it():
    from lab.guest.tamper import integrity_rose, tampered_final
    before = {"XfrmInStateProtoError": 2, "XfrmInNoStates": 0, "XfrmOutNoStates": 5}
    now = {"XfrmInStateProtoError": 3, "XfrmInNoStates": 4, "XfrmOutNoStates": 9}
    rose = integrity_rose(before, now)
    assert rose == {"XfrmInStateProtoError": 1}  # only integrity counters count, never NoStates
    assert tampered_final(rose, True, "be", "fe") == (
        "be's kernel refused the altered packets (XfrmInStateProtoError +1); fe's kernel sends it only protected")
    # the sender may let it out in clear (unaltered): it may still arrive, wait
    assert tampered_final(rose, False, "be", "fe") is None
    # nothing refused (ESP in UDP is not altered, or nothing sent yet): wait
    assert tampered_final(integrity_rose(before, before), True, "be", "fe") is None


def test_traffic_selectors_that_may_cover_a_flow():
    from lab.guest.finality import ts_may_cover
    assert ts_may_cover("10.10.2.20/32[tcp/80]", "10.10.2.20", 6, 80)
    assert ts_may_cover("10.10.2.20/32[tcp/http]", "10.10.2.20", 6, 80)
    assert not ts_may_cover("10.10.2.20/32[tcp/80]", "10.10.2.20", 6, 25)
    assert not ts_may_cover("10.10.2.20/32[tcp/80]", "10.10.2.21", 6, 80)
    assert not ts_may_cover("10.10.2.0/24[udp]", "10.10.2.20", 6, 80)
    assert ts_may_cover("10.10.1.10/32[tcp]", "10.10.1.10", 6, None)  # the ephemeral port: unknown
    assert ts_may_cover("10.10.1.10/32[tcp/80]", "10.10.1.10", 6, None)
    assert ts_may_cover("dynamic", "10.10.2.20", 6, 25) and ts_may_cover("0.0.0.0/0", "10.1.2.3", 17, 53)
    assert ts_may_cover("10.10.2.20/32[tcp/20-30]", "10.10.2.20", 6, 25)
    assert ts_may_cover("10.10.2.20/32[tcp/no-such-service]", "10.10.2.20", 6, 25)  # unreadable: may


def test_a_flow_no_initiating_rule_covers_is_shut_protected_and_final_once_the_firewall_counted():
    fin, plan = _finality("firewall-ipsec-ruleset")
    fin.policies = {"fe": [], "be": []}  # no policy holds SMTP: it leaves fe in clear
    by = {(p["dst"], p["service"]): p for p in plan.probes}
    smtp, http = by[("be", "smtp")], by[("be", "http")]
    assert not fin._initiated_cover(smtp)  # fe's only trap is TCP 80; be only responds
    assert fin._initiated_cover(http)
    assert fin._protected_shut(smtp, 0, lambda taken: False)[0] == "no rule of fe or be would start an SA for it"
    [(fw, drop)] = fin._static(smtp)["clear"]
    counted = {fw: {(drop["dev"], drop["pref"]): 4}}
    assert fin.final(smtp, 0, counted, {}, {}, {}) is not None  # the firewall counted its clear packets
    assert fin.final(smtp, 0, {}, {}, {}, {}) is None  # nothing seen yet: silence waits
    assert fin._protected_shut(http, 0, lambda taken: False) is None  # its trap may yet carry it


def test_a_trap_on_the_receiver_toward_the_sender_may_carry_the_flow():
    fin, plan = _finality("mismatched-filters-ikev1")
    smtp = next(p for p in plan.probes if p["service"] == "smtp")
    assert fin._initiated_cover(smtp)  # fe's all-traffic rule to be: never judged this way


HELD_ALL = ("src 0.0.0.0/0 dst 0.0.0.0/0 \n\tdir out priority 300000 ptype main \n"
            "\ttmpl src 0.0.0.0 dst 0.0.0.0\n\t\tproto esp reqid 1 mode transport\n")


def _windows_pair(tmp_path, src, dst, log_host, acquire):
    from lab.guest import xfrmpolicy
    fin, plan = _finality("windows-default-policies")
    probe = next(p for p in plan.probes if p["src"] == src and p["dst"] == dst)
    assert fin._watchable(probe)  # neither end falls back to clear (Require and no IPsec)
    fin.policies = {h: (xfrmpolicy.parse(HELD_ALL) if h == log_host else []) for h in fin.hosts}
    log = tmp_path / f"{log_host}.log"
    log.write_text("")
    fin.tails = {log_host: LogTail(str(log))}
    with log.open("a") as f:  # charon's [KNL] line once the kernel held a packet of the pair
        f.write(f"07:00:00.100 13[KNL] creating acquire job for policy {acquire} with reqid {{1}}\n")
    return fin, probe


def test_held_by_the_sender_toward_a_host_without_ipsec_is_final_once_the_kernel_asked(tmp_path):
    fin, probe = _windows_pair(tmp_path, "a-sec", "b-none", "a-sec", "")
    src, dst = probe["src_address"], probe["dst_address"]
    assert fin.final(probe, 0, {}, {}, {}, {}) is None  # nothing logged yet: silence
    with open(fin.tails["a-sec"].path, "a") as f:
        f.write(f"07:00:00.100 13[KNL] creating acquire job for policy {src}/32[tcp/40000] === "
                f"{dst}/32[tcp/http] with reqid {{1}}\n")
    fin.tails["a-sec"].read()
    assert fin.final(probe, 0, {}, {}, {}, {}) == "b-none runs no IPsec; a-sec's kernel sends it only protected"


def test_held_by_a_trap_whose_one_acquire_named_another_flow_is_final(tmp_path):
    fin, probe = _windows_pair(tmp_path, "a-sec", "b-none", "a-sec", "")
    src, dst = probe["src_address"], probe["dst_address"]
    fin.tails["a-sec"].read()
    with open(fin.tails["a-sec"].path, "a") as f:  # another policy's acquire says nothing of this flow
        f.write(f"07:00:00.100 13[KNL] creating acquire job for policy {src}/32[udp/5000] === "
                f"{dst}/32[udp/88] with reqid {{2}}\n")
    fin.tails["a-sec"].read()
    assert fin.final(probe, 0, {}, {}, {}, {}) is None
    with open(fin.tails["a-sec"].path, "a") as f:  # the trap holding this flow asked, for its first flow
        f.write(f"07:00:00.200 13[KNL] creating acquire job for policy {src}/32[udp/5000] === "
                f"{dst}/32[udp/88] with reqid {{1}}\n")
    fin.tails["a-sec"].read()
    assert fin.final(probe, 0, {}, {}, {}, {}) == "b-none runs no IPsec; a-sec's kernel sends it only protected"


# A Windows 2000 Kerberos exemption as the kernel holds it: traffic from source port 88 passes,
# above a Require-everything trap.
EXEMPT_SPORT_88 = ("src 0.0.0.0/0 dst 0.0.0.0/0 proto tcp sport 88 \n\tdir out priority 1000 ptype main \n"
                   + HELD_ALL)


def test_a_source_port_policy_is_decided_with_the_probes_own_port(tmp_path):
    from lab.guest import xfrmpolicy
    fin, probe = _windows_pair(tmp_path, "a-sec", "b-none", "a-sec", "")
    src, dst = probe["src_address"], probe["dst_address"]
    fin.policies["a-sec"] = xfrmpolicy.parse(EXEMPT_SPORT_88)
    with open(fin.tails["a-sec"].path, "a") as f:
        f.write(f"07:00:00.100 13[KNL] creating acquire job for policy {src}/32[tcp/40000] === "
                f"{dst}/32[tcp/http] with reqid {{1}}\n")
    fin.tails["a-sec"].read()
    fin.deadlines = {probe["id"]: Deadline(10)}
    assert fin.final(probe, 0, {}, {}, {}, {}) is None  # port not known yet: the exemption may take it
    fin.deadlines[probe["id"]].sport = 88
    assert fin.final(probe, 0, {}, {}, {}, {}) is None  # the exemption takes it: it leaves in clear
    fin.deadlines[probe["id"]].sport = 40000
    assert fin.final(probe, 0, {}, {}, {}, {}) == "b-none runs no IPsec; a-sec's kernel sends it only protected"


def test_an_answer_held_by_the_receiver_toward_a_host_without_ipsec_is_final(tmp_path):
    fin, probe = _windows_pair(tmp_path, "a-none", "b-sec", "b-sec", "")
    src, dst = probe["src_address"], probe["dst_address"]
    fin.tails["b-sec"].read()
    assert fin.final(probe, 0, {}, {}, {}, {}) is None
    with open(fin.tails["b-sec"].path, "a") as f:  # another flow's acquire is not this one's
        f.write(f"07:00:00.100 13[KNL] creating acquire job for policy {dst}/32[tcp/25] === "
                f"{src}/32[tcp/40000] with reqid {{1}}\n")
    fin.tails["b-sec"].read()
    assert fin.final(probe, 0, {}, {}, {}, {}) is None
    with open(fin.tails["b-sec"].path, "a") as f:
        f.write(f"07:00:00.200 13[KNL] creating acquire job for policy {dst}/32[tcp/http] === "
                f"{src}/32[tcp/40000] with reqid {{1}}\n")
    fin.tails["b-sec"].read()
    assert fin.final(probe, 0, {}, {}, {}, {}) == "a-none runs no IPsec; b-sec's kernel sends the answer only protected"
    fin.policies["b-sec"] = []  # the answer may leave in clear: never final
    assert fin.final(probe, 0, {}, {}, {}, {}) is None


def test_only_flows_a_soft_sa_could_let_through_wait_for_the_fallback():
    fin, plan = _finality("perpeer-require-request-ikev1")  # fe: Request for HTTP to legacy, Require for SMTP
    by = {(p["dst"], p["service"]): p for p in plan.probes}
    assert not fin._watchable(by[("legacy", "http")])  # its soft SA after 3 s is the behaviour
    assert fin._watchable(by[("legacy", "smtp")])  # no request rule covers it: blocked either way
    assert not fin._watchable(by[("be", "imap")])  # a request rule on both ends
