"""The terminal report: verdict table, failures, the Ipsecmon-style SA table and a summary line.

The short text helpers here (evidence in one line, the failure line, timings) are shared with the
JUnit and HTML writers so every report says the same thing in the same words.
"""

from __future__ import annotations

import re

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lab.verdicts.model import ChildSa, Evidence, RunReport, SegmentCount, Verdict

PHASE_NAMES = {"guest_boot": "guest boot", "bring_up": "bring-up"}
IPSEC_KINDS = (("esp", "ESP"), ("ah", "AH"))


# ---- text shared by every writer -------------------------------------------------------------


def phase_name(key: str) -> str:
    return PHASE_NAMES.get(key, key.replace("_", " "))


def timings_text(timings: dict[str, float]) -> str:
    """ "guest boot 1.2 s, bring-up 0.5 s, probes 1.3 s; total 3.7 s" """
    phases = {k: v for k, v in timings.items() if k != "total"}
    total = timings.get("total", sum(phases.values()))
    parts = ", ".join(f"{phase_name(k)} {v:.1f} s" for k, v in phases.items())
    return f"{parts}; total {total:.1f} s" if parts else f"total {total:.1f} s"


def summary_text(report: RunReport) -> str:
    """ "4/5 expectations hold, 1 failed" (plus ", 1 error" when the run itself went wrong). """
    total = len(report.verdicts)
    failed = len(report.failed)
    text = f"{total - failed}/{total} expectations hold"
    if failed:
        text += f", {failed} failed"
    if report.errors:
        text += f", {len(report.errors)} error" + ("s" if len(report.errors) > 1 else "")
    return text


def _by_segment(segments: tuple[SegmentCount, ...], kind: str) -> str:
    return ", ".join(f"{s.network} {getattr(s, kind)}" for s in segments if getattr(s, kind))


def dropped_why(ev: Evidence) -> str:
    """The shortest honest answer to 'where did it die?' for the table."""
    if ev.dropped_by:
        return ev.dropped_by.split(":")[0]  # "dropped at firewall fw"
    if ev.xfrm_errors:
        return "receiver XFRM " + ", ".join(f"{k} +{v}" for k, v in sorted(ev.xfrm_errors.items()))
    if ev.ike_reasons:
        reason = min(ev.ike_reasons, key=_telling)
        return "IKE: " + (reason if len(reason) <= 60 else reason[:57] + "...")
    return ""


# The cause before its symptoms: a revoked certificate explains an AUTHENTICATION_FAILED.
_CAUSES = ("revoked", "no trusted", "no private key", "no acceptable", "NO_PROPOSAL", "TS_UNACCEPTABLE",
           "traffic selectors", "AUTHENTICATION_FAILED", "MAC mismatched", "no matching peer", "retransmits")


def _telling(reason: str) -> int:
    return next((i for i, key in enumerate(_CAUSES) if key in reason), len(_CAUSES))


def short_evidence(ev: Evidence) -> str:
    """One line: "6 ESP (dmz 3, internal 3), SPI c02f0cbe/ca17170d, 0 clear"."""
    parts = []
    for kind, label in IPSEC_KINDS:
        count = sum(getattr(s, kind) for s in ev.segments)
        if count:
            parts.append(f"{count} {label} ({_by_segment(ev.segments, kind)})")
    if ev.spis:
        parts.append("SPI " + "/".join(ev.spis))
    if parts and ev.ike_seconds:  # a protected flow: how long its first packet waited for IKE
        parts.append(f"IKE {ev.ike_seconds:.2f} s")
    if parts or ev.clear_packets:
        handshake = ev.clear_handshake if parts else 0  # protected flow: payload-less packets first
        if handshake and handshake == ev.clear_packets:
            parts.append(f"{handshake} clear, no payload")
        else:
            parts.append(f"{ev.clear_packets} clear")
    if ev.throughput_mbps is not None:
        parts.insert(0, f"{ev.throughput_mbps:g} Mbit/s")
    if ev.answered_by:  # to a cluster: which node ("answered by be1")
        parts.insert(0, re.split(r" \(|;", ev.answered_by)[0])
    readable = [name for name, flag in (("marker", ev.marker_in_clear),
                                        ("credential", ev.credential_in_clear)) if flag]
    if readable:
        parts.append(" and ".join(readable) + " readable")
    if not ev.delivered:
        parts.append(f"no answer after {ev.seconds:.1f} s")
        why = dropped_why(ev)
        if why:
            parts.append(why)
    elif not parts:
        parts.append(f"answered in {ev.seconds:.1f} s, nothing seen on the wire")
    return ", ".join(parts)


def location(report: RunReport, verdict: Verdict) -> str:
    return f"{report.path}:{verdict.line}" if verdict.line is not None else report.path


def failure_line(report: RunReport, verdict: Verdict) -> str:
    return (f"FAILED {verdict.id} ({location(report, verdict)}): expected {verdict.expected_text}, "
            f"observed {verdict.observed_text} \u2014 {verdict.reason}")


def sa_ref_text(ev: Evidence) -> str:
    sa = ev.sa
    if sa is None:
        return "none"
    return (f"{sa.host} {sa.ike}/{sa.child} {sa.protocol} {sa.mode} {sa.algorithms} "
            f"SPI in {sa.spi_in} out {sa.spi_out}; "
            f"{', '.join(sa.local_ts)} === {', '.join(sa.remote_ts)}")


def evidence_lines(ev: Evidence) -> list[str]:
    """The full evidence as plain lines (JUnit failure text, logs)."""
    lines = [
        f"flow: {ev.flow}",
        (f"delivered: {'yes' if ev.delivered else 'no'}; "
         f"received by server: {'yes' if ev.received_by_server else 'no'}; {ev.seconds:.3f} s"),
    ]
    if ev.error:
        lines.append(f"error: {ev.error}")
    for s in ev.segments:
        lines.append(f"segment {s.network}: {s.clear} clear, {s.esp} ESP, {s.ah} AH")
    lines.append("SPIs: " + (", ".join(ev.spis) or "none"))
    lines.append("SA: " + sa_ref_text(ev))
    lines.append(f"marker readable in clear: {'yes' if ev.marker_in_clear else 'no'}; "
                 f"credential readable in clear: {'yes' if ev.credential_in_clear else 'no'}")
    return lines


# ---- rich output ------------------------------------------------------------------------------


def _observed_cell(verdict: Verdict) -> Text:
    return Text(verdict.observed_text, style="green" if verdict.ok else "bold red")


def print_verdicts(report: RunReport, console: Console) -> None:
    table = Table(title=f"{report.topology}: expectations", box=box.SIMPLE_HEAD,
                  title_justify="left", expand=False, pad_edge=False)
    table.add_column("from", no_wrap=True)
    table.add_column("to", no_wrap=True)
    table.add_column("service", no_wrap=True)
    table.add_column("expected", no_wrap=True)
    table.add_column("observed", no_wrap=True)
    table.add_column("evidence", overflow="fold", ratio=1)
    for v in report.verdicts:
        table.add_row(Text(v.source), Text(v.destination), Text(v.service), Text(v.expected_text),
                      _observed_cell(v), Text(short_evidence(v.evidence)))
    console.print(table)
    for v in report.failed:
        console.print(Text(failure_line(report, v), style="red"))


SA_COLUMNS = (  # header, justify; every cell has two lines: in/local above, out/remote below
    ("host", "left"), ("peer", "left"), ("child", "left"), ("protocol\nmode", "left"),
    ("algorithms", "left"), ("SPI\nin/out", "left"), ("bytes\nin/out", "right"),
    ("packets\nin/out", "right"), ("traffic selectors\nlocal/remote", "left"),
)


def _sa_cells(sa: ChildSa) -> list[Text]:
    local = "\n".join(sa.local_ts) or "-"
    remote = "\n".join(sa.remote_ts) or "-"
    return [Text(x) for x in (
        sa.host, sa.peer, sa.child,
        f"{sa.protocol}\n{sa.mode}", sa.algorithms.replace("/", "/\n"),
        f"{sa.spi_in}\n{sa.spi_out}", f"{sa.bytes_in}\n{sa.bytes_out}",
        f"{sa.packets_in}\n{sa.packets_out}", f"{local}\n{remote}",
    )]


def print_sas(report: RunReport, console: Console) -> None:
    """The Ipsecmon view (B14): one row per installed CHILD_SA on each host."""
    if not report.sas:
        console.print(Text("No CHILD_SAs installed on any host."))
        return
    table = Table(title="Security associations (list-sas)", box=box.SIMPLE_HEAD,
                  title_justify="left", pad_edge=False, show_lines=False)
    for header, justify in SA_COLUMNS:
        table.add_column(header, justify=justify, overflow="fold", no_wrap=header.startswith(("SPI", "host")))
    for sa in report.sas:
        table.add_row(*_sa_cells(sa), end_section=True)
    console.print(table)


def print_summary(report: RunReport, console: Console) -> None:
    style = "bold green" if report.ok else "bold red"
    line = Text(summary_text(report), style=style)
    if report.timings:
        line.append(f" ({timings_text(report.timings)})")
    console.print(line)
