"""The report writers, on a RunReport built by hand: one ESP pass, one clear-vs-esp failure,
one dropped flow, two CHILD_SA rows and one run error."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from lab.model.topology import Result
from lab.report import write_all
from lab.report.html import render_html, write_html
from lab.report.jsonout import SCHEMA, write_json
from lab.report.junit import write_junit
from lab.report.table import print_sas, print_summary, print_verdicts, short_evidence
from lab.verdicts.model import ChildSa, Evidence, RunReport, SaRef, SegmentCount, Verdict

SCRIPT = "<script>alert(1)</script>"


def _sa_ref() -> SaRef:
    return SaRef(host="fe", ike="fe-db", child="fe-db-sql", protocol="ESP", mode="TRANSPORT",
                 algorithms="AES_GCM_16-256", spi_in="c02f0cbe", spi_out="ca17170d",
                 local_ts=("10.10.1.10/32[tcp]",), remote_ts=("10.10.2.30/32[tcp/1433]",))


def _esp_pass() -> Verdict:
    ev = Evidence(flow="tcp 10.10.1.10:49293 -> 10.10.2.30:1433", delivered=True,
                  received_by_server=True, error=None, seconds=0.412,
                  segments=(SegmentCount("dmz", esp=3), SegmentCount("internal", esp=3)),
                  spis=("c02f0cbe", "ca17170d"), sa=_sa_ref(),
                  marker_in_clear=False, credential_in_clear=False)
    return Verdict(id="fe->db:sql", source="fe", destination="db", service="sql",
                   expected=Result.ESP, observed=Result.ESP, line=37,
                   reason="6 ESP packets with SPIs of fe-db-sql, none of the flow in clear",
                   evidence=ev)


def _clear_fail() -> Verdict:
    ev = Evidence(flow="tcp 10.10.1.10:49301 -> 10.10.2.20:80", delivered=True,
                  received_by_server=True, error=None, seconds=0.205,
                  segments=(SegmentCount("dmz", clear=6), SegmentCount("internal", clear=6)),
                  spis=(), sa=None, marker_in_clear=True, credential_in_clear=True)
    return Verdict(id="fe->be:http", source="fe", destination="be", service="http",
                   expected=Result.ESP, observed=Result.CLEAR, line=41,
                   reason=f"12 packets crossed in clear, no SA covers tcp/80 {SCRIPT}",
                   evidence=ev)


def _dropped() -> Verdict:
    ev = Evidence(flow="tcp 10.10.9.9:49310 -> 10.10.2.30:1433", delivered=False,
                  received_by_server=False, error="timed out", seconds=8.0,
                  segments=(), spis=(), sa=None, marker_in_clear=False, credential_in_clear=False)
    return Verdict(id="guest->db:sql", source="guest", destination="db", service="sql",
                   expected=Result.DROPPED, observed=Result.DROPPED, line=45,
                   reason="no answer after 8.0 s", evidence=ev)


def _child(host: str, peer: str, spi_in: str, spi_out: str, local: str, remote: str) -> ChildSa:
    return ChildSa(host=host, ike="fe-db", peer=peer, child="fe-db-sql", state="INSTALLED",
                   protocol="ESP", mode="TRANSPORT", algorithms="AES_GCM_16-256",
                   spi_in=spi_in, spi_out=spi_out, bytes_in=1240, bytes_out=980,
                   packets_in=3, packets_out=3, local_ts=(local,), remote_ts=(remote,))


def sample_report() -> RunReport:
    return RunReport(
        topology="three-tier", description="Front end talks to the database only over ESP.",
        path="topo.yaml", run_id="20251127-130612-ab12", kernel="uml 7.2.7",
        started="2025-11-27T13:06:12+00:00",
        timings={"guest_boot": 1.2, "bring_up": 0.5, "probes": 1.3, "teardown": 0.1, "total": 3.7},
        verdicts=[_esp_pass(), _clear_fail(), _dropped()],
        sas=[_child("fe", "10.10.2.30", "c02f0cbe", "ca17170d",
                    "10.10.1.10/32[tcp]", "10.10.2.30/32[tcp/1433]"),
             _child("db", "10.10.1.10", "ca17170d", "c02f0cbe",
                    "10.10.2.30/32[tcp/1433]", "10.10.1.10/32[tcp]")],
        ike_packets={"dmz": 4, "internal": 4},
        errors=["charon on be logged: no config for 10.10.2.20"],
        artifacts={"dmz capture": "captures/dmz.pcap", "charon fe": "logs/charon-fe.log"},
    )


@pytest.fixture
def report() -> RunReport:
    return sample_report()


def _console() -> Console:
    return Console(record=True, width=120, color_system=None)


# ---- JSON -------------------------------------------------------------------------------------


def test_json_round_trips_with_ok_flags(report, tmp_path):
    path = write_json(report, tmp_path / "out" / "result.json")
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA
    assert data["ok"] is False
    assert [v["ok"] for v in data["verdicts"]] == [True, False, True]
    assert data["verdicts"][0]["evidence"]["spis"] == ["c02f0cbe", "ca17170d"]
    assert data["verdicts"][0]["evidence"]["sa"]["local_ts"] == ["10.10.1.10/32[tcp]"]
    assert data["sas"][1]["spi_in"] == "ca17170d"
    assert data["errors"] == report.errors
    assert {k: v for k, v in data.items() if k != "schema"} == json.loads(json.dumps(report.to_dict()))


# ---- JUnit ------------------------------------------------------------------------------------


def test_junit_counts(report, tmp_path):
    root = ET.parse(write_junit(report, tmp_path / "junit.xml")).getroot()
    suites = root.findall("testsuite")
    assert len(suites) == 1 and suites[0].get("name") == "three-tier"
    suite = suites[0]
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["fe->db:sql", "fe->be:http", "guest->db:sql", "lab-run"]
    assert all(c.get("classname") == "three-tier" for c in cases)
    assert cases[0].get("time") == "0.412"
    assert len(suite.findall("testcase/failure")) == 1
    assert len(suite.findall("testcase/error")) == 1
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "1", "1")
    props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
    assert props["kernel"] == "uml 7.2.7" and props["run_id"] == "20251127-130612-ab12"


def test_junit_failure_text(report, tmp_path):
    root = ET.parse(write_junit(report, tmp_path / "junit.xml")).getroot()
    failure = root.find("testsuite/testcase[@name='fe->be:http']/failure")
    assert failure.get("message") == "expected esp, observed clear"
    assert SCRIPT in failure.text  # XML escaping is ElementTree's; the text survives intact
    assert "segment dmz: 6 clear, 0 ESP, 0 AH" in failure.text
    assert "credential readable in clear: yes" in failure.text
    error = root.find("testsuite/testcase[@name='lab-run']/error")
    assert error.get("message") == report.errors[0]


def test_junit_without_errors_has_no_run_case(report, tmp_path):
    report.errors = []
    root = ET.parse(write_junit(report, tmp_path / "junit.xml")).getroot()
    assert root.find("testsuite/testcase[@name='lab-run']") is None
    assert root.find("testsuite").get("errors") == "0"


# ---- HTML -------------------------------------------------------------------------------------


def test_html_contains_every_verdict_and_escapes(report, tmp_path):
    html = write_html(report, tmp_path / "report.html").read_text()
    for v in report.verdicts:
        assert v.id.replace(">", "&gt;") in html
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "FAIL" in html and "three-tier" in html
    assert "AES_GCM_16-256" in html and "c02f0cbe" in html
    assert 'href="captures/dmz.pcap"' in html
    assert "charon on be logged" in html


def test_html_is_self_contained(report):
    html = render_html(report)
    assert "<link" not in html and "src=" not in html and "@import" not in html
    assert "http://" not in html and "https://" not in html


def test_html_pass(report):
    report.verdicts = [v for v in report.verdicts if v.ok]
    report.errors = []
    html = render_html(report)
    assert 'class="result PASS"' in html and "2/2 expectations hold" in html


# ---- terminal ---------------------------------------------------------------------------------


def test_table_shows_failure_line_and_spi(report):
    console = _console()
    print_verdicts(report, console)
    print_sas(report, console)
    out = console.export_text()
    assert ("FAILED fe->be:http (topo.yaml:41): expected esp, observed clear \u2014 "
            "12 packets crossed in clear") in " ".join(out.split())
    assert "c02f0cbe" in out
    assert "10.10.2.30/32[tcp/1433]" in out  # rich markup in selectors is printed, not parsed
    assert max(len(line) for line in out.splitlines()) <= 120


def test_short_evidence(report):
    esp, clear, dropped = (v.evidence for v in report.verdicts)
    assert short_evidence(esp) == "6 ESP (dmz 3, internal 3), SPI c02f0cbe/ca17170d, 0 clear"
    assert short_evidence(clear) == "12 clear, marker and credential readable"
    assert short_evidence(dropped) == "no answer after 8.0 s"


def test_summary(report):
    console = _console()
    print_summary(report, console)
    out = console.export_text().strip()
    assert out == ("2/3 expectations hold, 1 failed, 1 error (guest boot 1.2 s, bring-up 0.5 s, "
                   "probes 1.3 s, teardown 0.1 s; total 3.7 s)")
    report.verdicts = [report.verdicts[0]]
    report.errors = []
    console = _console()
    print_summary(report, console)
    assert console.export_text().startswith("1/1 expectations hold (")


# ---- all --------------------------------------------------------------------------------------


def test_write_all(report, tmp_path):
    paths = write_all(report, tmp_path / "run")
    assert paths == {"json": str(tmp_path / "run" / "result.json"),
                     "junit": str(tmp_path / "run" / "junit.xml"),
                     "html": str(tmp_path / "run" / "report.html")}
    assert all(Path(p).is_file() for p in paths.values())
    html = (tmp_path / "run" / "report.html").read_text()
    assert 'href="result.json"' in html and 'href="junit.xml"' in html
    assert report.artifacts == {"dmz capture": "captures/dmz.pcap", "charon fe": "logs/charon-fe.log"}


def _dropped_evidence(**kw):
    from lab.verdicts.model import Evidence
    base = dict(flow="tcp a:1 -> b:80", delivered=False, received_by_server=False, error="timed out", seconds=10.0,
                segments=(), spis=(), sa=None, marker_in_clear=False, credential_in_clear=False)
    return Evidence(**{**base, **kw})


def test_the_table_says_where_a_flow_died():
    from lab.report.table import dropped_why
    assert dropped_why(_dropped_evidence(dropped_by="dropped at firewall fw: 7 packets ...")) == "dropped at firewall fw"
    assert dropped_why(_dropped_evidence(xfrm_errors={"XfrmInStateProtoError": 3})) == "receiver XFRM XfrmInStateProtoError +3"
    # the cause, not its symptom
    why = dropped_why(_dropped_evidence(ike="failed", ike_reasons=("fe: received AUTHENTICATION_FAILED notify error",
                                                            "be: certificate was revoked on Nov 27")))
    assert why == "IKE: be: certificate was revoked on Nov 27"
    assert dropped_why(_dropped_evidence()) == ""


def test_a_failover_that_never_reached_a_steady_state_fails_and_says_so():
    from lab.verdicts.failover import judge_failover

    scenario = {"name": "planned", "mode": "planned", "vip": "10.10.2.20", "src": "fe", "port": 80,
                "max_seconds": 6}
    fo = {"t_event": 100.0, "t_event_done": 100.0, "steps": [], "deadline": 100.0,
          "requests": [{"n": 1, "marker": "m1", "t_send": 90.0, "t_done": 91.0, "ok": False}],
          "steady": {"steady": False, "after": 30.0, "why": "no CHILD_SA with 10.10.2.20 within 30 s"}}
    r = judge_failover(scenario, fo, {}, [], "fast", [])
    assert not r.ok
    assert "no steady state before the move (no CHILD_SA with 10.10.2.20 within 30 s)" in r.reason
    fo["steady"] = {"steady": True, "after": 2.4, "sa_up_after": 1.9}
    fo["requests"] += [{"n": 2, "marker": "m2", "t_send": 99.0, "t_done": 99.1, "ok": True},
                       {"n": 3, "marker": "m3", "t_send": 100.5, "t_done": 101.6, "ok": True}]
    r = judge_failover(scenario, fo, {}, [], "fast", [])
    assert r.ok and r.steady_reached and "CHILD_SA with the VIP up after 1.9 s" in r.steady
