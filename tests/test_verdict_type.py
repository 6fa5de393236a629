"""A verdict carries Result values, the inconclusive observations as a type of their own, and the
IKE outcome as fields of its own (issue 11). No root: verdicts built by hand or judged from
hand-made captures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from scapy.layers.inet import IP, TCP
from scapy.layers.ipsec import ESP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from lab.errors import TopologyError
from lab.model.load import load_topology
from lab.model.services import parse_service
from lab.model.topology import Expectation, Result
from lab.predict.diff import Change, changes, markdown
from lab.predict.live import MatrixRow, write_matrix
from lab.pytest_plugin import LabRuns, check_expectation
from lab.report.html import render_html
from lab.report.jsonout import SCHEMA, write_json
from lab.report.table import failure_line, print_verdicts
from lab.verdicts.classify import child_sas, judge
from lab.verdicts.ike import IkeOutcome
from lab.verdicts.model import Evidence, Inconclusive, RunReport, SaRef, SegmentCount, Verdict, observed_of
from lab.verdicts.wire import read_capture

ROOT = Path(__file__).resolve().parent.parent
METHODS = ROOT / "topologies" / "default-response-methods.yaml"
FE, BE = "10.10.1.10", "10.10.2.20"
T0 = 1_000_000.0


def _evidence(delivered=True, ike=None, sa=False) -> Evidence:
    ref = SaRef("fe", "peer-be", "fe-be-http", "ESP", "TRANSPORT", "AES_GCM_16-256", "ca17170d", "c02f0cbe",
                (f"{FE}/32[tcp]",), (f"{BE}/32[tcp/http]",)) if sa else None
    return Evidence(flow=f"tcp {FE}:40000 -> {BE}:80", delivered=delivered, received_by_server=delivered,
                    error=None if delivered else "timed out", seconds=0.4 if delivered else 2.0,
                    segments=(SegmentCount("dmz", esp=2),) if sa else (), spis=("c02f0cbe", "ca17170d") if sa else (),
                    sa=ref, marker_in_clear=False, credential_in_clear=False, ike=ike,
                    ike_reasons=() if ike != "failed" else ("be: no acceptable proposal found",),
                    ike_seconds=0.25 if sa else None)


def _verdict(expected=Result.ESP, observed=Result.ESP, expected_ike=None, ike=None, **kw) -> Verdict:
    ev = kw.pop("evidence", None) or _evidence(delivered=observed is not Result.DROPPED, ike=ike,
                                               sa=observed is Result.ESP)
    return Verdict(id="fe->be:http", source="fe", destination="be", service="http", expected=expected,
                   observed=observed, reason="r", evidence=ev, line=7, expected_ike=expected_ike, **kw)


# ---- the type -------------------------------------------------------------------------------


@pytest.mark.parametrize("word", [i.value for i in Inconclusive])
def test_inconclusive_words_are_no_result_and_a_topology_may_not_expect_them(word, tmp_path):
    with pytest.raises(ValueError):
        Result(word)
    assert observed_of(word) is Inconclusive(word)
    text = (ROOT / "topologies" / "exchange-fe-be-http.yaml").read_text()
    assert "result: esp" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("result: esp", f"result: {word}", 1))
    with pytest.raises(TopologyError) as e:
        load_topology(str(bad))
    assert "result" in str(e.value)


def test_every_result_reads_back_as_itself():
    assert all(observed_of(r.value) is r for r in Result)


def test_plain_strings_are_refused():
    """A string "esp" would compare unequal to Result.ESP under `is` and fail quietly."""
    with pytest.raises(TypeError, match="expected must be a Result"):
        _verdict(expected="esp")
    with pytest.raises(TypeError):
        _verdict(observed="unobserved")


@pytest.mark.parametrize("expected", list(Result))
@pytest.mark.parametrize("inconclusive", list(Inconclusive))
def test_an_inconclusive_observation_never_passes(expected, inconclusive):
    assert not _verdict(expected=expected, observed=inconclusive).ok


def test_ok_needs_the_result_and_the_expected_ike():
    assert _verdict().ok
    assert not _verdict(observed=Result.CLEAR).ok
    assert _verdict(expected_ike="established", ike="established").ok
    assert not _verdict(expected_ike="established", ike="failed").ok
    assert not _verdict(expected_ike="established", ike=None).ok  # unknown is no pass
    assert _verdict(ike="failed").ok  # nothing said about IKE: the pair's other flows do not matter


def test_texts_read_as_before_with_ike_in_its_own_field():
    v = _verdict(expected=Result.DROPPED, observed=Result.DROPPED, expected_ike="failed", ike="failed")
    assert (v.expected_text, v.observed_text, v.ike) == ("dropped, IKE failed", "dropped, IKE failed", "failed")
    assert _verdict(expected_ike="established").observed_text == "esp, IKE unknown"
    plain = _verdict(ike="established")
    assert (plain.expected_text, plain.observed_text) == ("esp", "esp")  # IKE shown only when expected
    assert _verdict(observed=Inconclusive.NOT_JUDGED).observed_text == "not judged"


# ---- JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize("v", [
    _verdict(),
    _verdict(expected=Result.DROPPED, observed=Result.DROPPED, expected_ike="failed", ike="failed"),
    _verdict(observed=Inconclusive.UNOBSERVED),
    _verdict(expected=Result.DROPPED, observed=Inconclusive.DROPPED_ELSEWHERE),
    _verdict(observed=Inconclusive.NOT_JUDGED, expected_ike="established"),
], ids=lambda v: v.observed_text)
def test_a_verdict_round_trips_through_json_with_plain_strings(v):
    d = json.loads(json.dumps(v.to_dict()))
    assert type(d["expected"]) is str and type(d["observed"]) is str
    assert d["expected"] == v.expected.value and d["observed"] == v.observed.value
    assert (d["expected_ike"], d["ike"], d["ok"]) == (v.expected_ike, v.ike, v.ok)
    back = Verdict.from_dict(d)
    assert back == v and type(back.observed) is type(v.observed) and back.ok == v.ok


def test_result_json_is_schema_2_with_ike_fields(tmp_path):
    v = _verdict(expected=Result.DROPPED, observed=Result.DROPPED, expected_ike="failed", ike="failed")
    report = RunReport("t", "", "t.yaml", "r", "uml", "2026-12-03T13:00:00+00:00", {}, [v, _verdict()], [])
    raw = json.loads(write_json(report, tmp_path / "result.json").read_text())
    assert SCHEMA == raw["schema"] == "ipsec-lab/result/2"
    first = raw["verdicts"][0]
    assert (first["expected"], first["observed"], first["expected_ike"], first["ike"], first["ok"]) == \
        ("dropped", "dropped", "failed", "failed", True)
    assert [Verdict.from_dict(d) for d in raw["verdicts"]] == report.verdicts


# ---- classify: IKE no longer folded into the observed text ----------------------------------


def _frame(ip, t):
    p = Ether() / ip
    p.time = t
    return p


def _probe():
    plan = {"id": "p1", "src": "fe", "dst": "be", "src_address": FE, "dst_address": BE, "protocol": "tcp",
            "port": 80, "service": "http", "marker": "LABPROBE-p1-aa", "credential_on_wire": "ZmFrZQ==",
            "timeout": 8.0}
    outcome = {"id": "p1", "delivered": True, "error": None, "sport": 40000, "t_start": T0,
               "t_end": T0 + 1.2, "t_reply": T0 + 1.1}
    return plan, outcome


SAS = {"fe": [{"peer-be": {"remote-host": BE, "child-sas": {"c": {
    "name": "fe-be-http", "state": "INSTALLED", "mode": "TRANSPORT", "protocol": "ESP",
    "spi-in": "ca17170d", "spi-out": "c02f0cbe", "local-ts": [f"{FE}/32[tcp]"], "remote-ts": [f"{BE}/32[tcp/http]"]}}}}]}


def _packets(tmp_path, frames):
    path = tmp_path / "dmz.pcap"
    wrpcap(str(path), frames)
    return read_capture("dmz", str(path))


@pytest.mark.parametrize("state,ok", [("established", True), ("failed", False)])
def test_judge_keeps_the_result_bare_and_the_ike_beside_it(tmp_path, state, ok):
    pkts = _packets(tmp_path, [_frame(IP(src=FE, dst=BE) / ESP(spi=0xC02F0CBE, seq=1) / Raw(b"x" * 60), T0 + 1)])
    plan, outcome = _probe()
    exp = Expectation("fe", "be", parse_service("http"), Result.ESP, ike="established")
    v = judge(plan, outcome, [], pkts, child_sas(SAS), ["dmz"], exp, ike=IkeOutcome(state == "established", ()))
    assert v.expected is Result.ESP and v.observed is Result.ESP and v.expected_ike == "established"
    assert v.ike == state and v.ok is ok and v.observed_text == f"esp, IKE {state}"


def test_an_unobserved_flow_with_an_ike_expectation_says_so_in_its_reason(tmp_path):
    """Before, ", IKE established" was appended first, so the reason missed that nothing was seen."""
    pkts = _packets(tmp_path, [_frame(IP(src="10.9.9.9", dst=BE) / TCP(sport=1, dport=2), T0)])
    plan, outcome = _probe()
    exp = Expectation("fe", "be", parse_service("http"), Result.ESP, ike="established")
    v = judge(plan, outcome, [], pkts, child_sas(SAS), ["dmz"], exp, ike=IkeOutcome(True, ()))
    assert v.observed is Inconclusive.UNOBSERVED and not v.ok
    assert "no packet of this flow was captured" in v.reason


# ---- what a user sees -----------------------------------------------------------------------


def _report(*verdicts) -> RunReport:
    return RunReport("t", "", "t.yaml", "r", "uml", "2026-12-03T13:00:00+00:00", {}, list(verdicts), [])


def test_table_and_failure_line_show_ike_where_the_expectation_names_it():
    good = _verdict(expected_ike="established", ike="established")
    bad = _verdict(expected=Result.DROPPED, observed=Result.DROPPED, expected_ike="failed", ike="established")
    console = Console(record=True, width=200, color_system=None)
    print_verdicts(_report(good, bad), console)
    text = console.export_text()
    assert "esp, IKE established   esp, IKE established" in text
    assert "dropped, IKE failed    dropped, IKE established" in text
    assert failure_line(_report(bad), bad).startswith(
        "FAILED fe->be:http (t.yaml:7): expected dropped, IKE failed, observed dropped, IKE established")


def test_html_marks_an_expected_drop_with_an_ike_expectation_as_expected():
    """Before, "dropped, IKE failed" != "dropped": the page painted an expected drop red."""
    v = _verdict(expected=Result.DROPPED, observed=Result.DROPPED, expected_ike="failed", ike="failed")
    page = render_html(_report(v))
    assert '<dt>Delivered</dt><dd class="good">no (expected)</dd>' in page
    assert '<dt>IKE</dt><dd class="good">failed (expected)</dd>' in page
    wrong = render_html(_report(_verdict(expected_ike="established", ike="failed")))
    assert '<dt>IKE</dt><dd class="bad">failed, expected established</dd>' in wrong
    assert "<dt>IKE</dt>" not in render_html(_report(_verdict(ike="established")))


# ---- matrix, lab diff, the pytest plugin ----------------------------------------------------


def test_a_matrix_row_never_agrees_on_an_inconclusive_observation(tmp_path):
    row = MatrixRow("fe->be:http", "fe", "be", "http", Result.ESP, Result.ESP, Inconclusive.UNOBSERVED, "w", "e")
    assert not row.agrees and not row.holds
    assert MatrixRow("i", "fe", "be", "http", None, Result.ESP, Result.ESP, "w", "e").agrees
    topo = load_topology(str(ROOT / "topologies" / "exchange-fe-be-http.yaml"))
    raw = json.loads(Path(write_matrix([row], topo, tmp_path)).read_text())["rows"][0]
    assert (raw["written"], raw["predicted"], raw["observed"], raw["agrees"]) == ("esp", "esp", "unobserved", False)
    assert all(type(raw[k]) is str for k in ("written", "predicted", "observed"))


def test_diff_names_an_absent_flow_and_compares_typed_results():
    topo = load_topology(str(ROOT / "topologies" / "exchange-fe-be-http.yaml"))
    old = {"a": ("fe", "be", "http", Result.CLEAR), "gone": ("fe", "be", "smtp", Result.ESP)}
    new = {"a": ("fe", "be", "http", Result.ESP), "same": ("fe", "dc", "kerberos", Result.CLEAR)}
    found = changes(old, new, topo)
    assert [c.line() for c in found] == ["fe -> be http: clear -> esp", "fe -> dc kerberos: absent -> clear",
                                         "fe -> be smtp: esp -> absent"]
    assert "| `fe -> dc kerberos` | absent | clear |" in markdown(found, "a", "b", True, (2, 2))
    assert Change("x", "a", "b", "s", None, Inconclusive.UNOBSERVED, True).after == "unobserved"


def test_a_matrix_run_holds_the_written_ike_expectation_too(tmp_path):
    """In a matrix run the verdict compares the prediction (no IKE); the written `ike:` is
    checked by the plugin against the verdict's own IKE field."""
    exp = load_topology(str(METHODS)).expectations[1]
    assert (exp.result, exp.ike) == (Result.DROPPED, "failed")
    runs = LabRuns(tmp_path, matrix=True)

    def verdict(ike):
        return Verdict(id=exp.id, source=exp.source, destination=exp.destination, service=exp.service.name,
                       expected=Result.DROPPED, observed=Result.DROPPED, reason="r",
                       evidence=_evidence(delivered=False, ike=ike), line=44)
    runs.reports[str(METHODS)] = _report(verdict("failed"))
    check_expectation(runs, str(METHODS), exp.id)
    runs.reports[str(METHODS)] = _report(verdict("established"))
    with pytest.raises(AssertionError, match="expected dropped, IKE failed, observed dropped, IKE established"):
        check_expectation(runs, str(METHODS), exp.id)


# ---- real clients: refused and tls are Results too -------------------------------------------


def test_a_real_client_reads_refused_and_tls_as_results():
    from lab.verdicts import realclient

    plan, outcome = _probe()
    client = {**plan, "client": "curl", "service": "https"}
    ev = _evidence()
    assert realclient.observed(Result.CLEAR, plan, outcome, ev) is Result.CLEAR  # the lab's own probe
    assert realclient.observed(Result.CLEAR, client, {**outcome, "refused": True}, ev) is Result.REFUSED
    assert realclient.observed(Result.CLEAR, client, outcome, ev) is Result.TLS  # nothing readable
    readable = Evidence(**{**ev.__dict__, "credential_in_clear": True})
    assert realclient.observed(Result.CLEAR, client, outcome, readable) is Result.CLEAR
    assert realclient.observed(Inconclusive.UNOBSERVED, client, outcome, ev) is Inconclusive.UNOBSERVED
    text = "delivered in 0.40 s; 3 payload-less packets in clear before IPsec took over"
    said = realclient.reason(text, client, {**outcome, "client": "curl", "answer": "HTTP 403.4"}, Result.REFUSED)
    assert said == "answered in 0.40 s; 3 packets in clear; real curl: HTTP 403.4"
    assert realclient.reason(text, client, outcome, Result.ESP).startswith("delivered in 0.40 s; 3 payload-less")
