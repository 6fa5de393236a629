"""When a waiting probe may stop: final evidence only, never silence, never a soft-SA host."""

from __future__ import annotations

from lab.compile.plan import build_plan
from lab.guest.finality import Finality, LogTail
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
