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
    http, kerberos = plan["probes"]
    assert fin._blocking_filters(http)  # TCP 80, ESP, AH, UDP 4500: all meet 'default drop'
    assert fin._blocking_filters(kerberos) is None  # allowed


def test_a_flow_whose_esp_would_pass_is_not_cut_short():
    fin, plan = _finality("firewall-missing-ike")  # ESP allowed, IKE not: that is silence
    assert fin._blocking_filters(plan["probes"][0]) is None


def test_hosts_with_a_soft_sa_fallback_always_wait():
    fin, plan = _finality("windows-default-policies")
    watched = {p["src"] for p in plan["probes"] if fin._watchable(p)}
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
    http, kerberos = plan["probes"]
    deadlines = {p["id"]: Deadline(30) for p in plan["probes"]}
    kernel.answer(r"tc -s -j -batch", _counts(0))
    fin.start(plan["probes"], deadlines)
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


def test_a_refusal_in_the_log_ends_the_wait_once_nothing_still_negotiates(tmp_path, quick):
    plan = build_plan(load_topology("topologies/exchange-fe-be-http.yaml"), "t", "/tmp/x")
    with tempfile.TemporaryDirectory(prefix="lab") as work:  # VICI socket paths: 108 bytes at most
        charons = {name: charon.Charon(name, f"ns-{name}", work) for name in ("fe", "be")}
        servers = {}
        for name, c in charons.items():
            os.makedirs(c.dir)
            servers[name] = ScriptedVici(c.socket_path)
            with open(c.log_path, "w") as f:  # before the probes: not evidence
                f.write("07:00:00.000 05[IKE] <peer-be|1> initiating IKE_SA peer-be[1] to 10.10.2.20\n"
                        "07:00:00.100 05[IKE] <peer-be|1> received NO_PROPOSAL_CHOSEN notify error\n")
        servers["fe"].sas = [{"peer-be": {"uniqueid": "2", "state": "CONNECTING", "remote-host": "10.10.2.20"}}]
        fin = finality.Finality(plan, charons)
        to_be = [p for p in plan["probes"] if {p["src"], p["dst"]} == {"fe", "be"}]  # either way
        deadlines = {p["id"]: Deadline(30) for p in plan["probes"]}
        fin.start(plan["probes"], deadlines)
        try:
            time.sleep(0.3)
            assert not any(d.reason for d in deadlines.values())  # only old lines so far
            with open(charons["fe"].log_path, "a") as f:
                f.write("07:00:05.000 05[IKE] <peer-be|2> initiating IKE_SA peer-be[2] to 10.10.2.20\n"
                        "07:00:05.100 05[IKE] <peer-be|2> received NO_PROPOSAL_CHOSEN notify error\n")
            time.sleep(0.4)
            assert not any(d.reason for d in deadlines.values())  # an IKE_SA with be still negotiates
            servers["fe"].sas = []
            assert _wait(lambda: all(deadlines[p["id"]].reason for p in to_be))
        finally:
            fin.stop()
            for s in servers.values():
                s.close()
    assert all(deadlines[p["id"]].reason == "IKE failed: fe: received NO_PROPOSAL_CHOSEN notify error"
               for p in to_be)
    others = [p for p in plan["probes"] if p not in to_be]
    assert others and not any(deadlines[p["id"]].reason for p in others)  # other pairs: not their failure
    assert {g["probe"] for g in fin.given_up} == {p["id"] for p in to_be}


def test_a_daemon_that_does_not_answer_may_still_succeed(tmp_path):
    plan = build_plan(load_topology("topologies/exchange-fe-be-http.yaml"), "t", "/tmp/x")
    c = charon.Charon("fe", "ns-fe", str(tmp_path))  # no VICI socket at all
    fin = finality.Finality(plan, {"fe": c})
    assert fin._negotiating("fe", "10.10.2.20") is True
    assert fin._negotiating("legacy", "10.10.2.20") is False  # no charon: nothing negotiates


def test_nothing_to_watch_starts_no_thread():
    fin, plan = _finality("windows-default-policies")
    fin.start(plan["probes"], {})
    assert fin._thread is None
    fin.stop()
