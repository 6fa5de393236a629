"""An independent reading of the captures: tcpdump filter expressions, not the lab's classifier.

The lab judges each flow with its own parser (lab/verdicts/wire.py, dpkt). This module counts
the same flow's packets again with `tcpdump -r CAPTURE EXPR` on the host, so a bug in that
parser cannot grade itself. What must agree, per verdict:
- esp: ESP (IP 50, or ESP in UDP 4500) crossed between the two hosts or the SA's endpoints,
  and none of the flow's own packets carrying application data crossed unprotected;
- ah / ah+esp: AH (IP 51) crossed between them with the SA's SPIs, carrying the flow's own
  packets (its ports or echo id, read behind the AH header; for ah+esp, ESP inside), and none
  of the flow's own packets carrying data crossed unprotected;
- clear: the flow's own TCP/UDP/ICMP packets (its addresses, protocol and ports) crossed.
Payload-less packets (a TCP handshake accepted in clear before IPsec took over, B3) are allowed
under esp and ah, as the semantics say.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

FLOW = re.compile(r"^(?P<proto>tcp|udp|icmp) (?P<src>[\d.]+):(?P<sport>\w+) -> (?P<dst>[\d.]+):(?P<dport>\w+)$")
IHL = "((ip[0]&0xf)<<2)"  # the IP header's length: AH and ESP headers start there
# Application bytes in a packet, per transport, as BPF arithmetic.
DATA = {
    "tcp": f"(ip[2:2] - {IHL} - ((tcp[12]&0xf0)>>2)) > 0",
    "udp": "udp[4:2] > 8",
    "icmp": f"(ip[2:2] - {IHL}) > 8",
}
ESP = "(ip proto 50 or (udp port 4500 and udp[8:4] != 0))"  # ESP, or ESP in UDP (not IKE's marker)
AH_DATA = f"({IHL} + ((ip[{IHL}+1] + 2) << 2))"  # AH's payload: its length field counts 4-byte words, less 2
TRANSPORT_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1}


@dataclass(frozen=True)
class Flow:
    proto: str
    src: str
    sport: int | None  # None: unknown (a real client's port the lab could not read)
    dst: str
    dport: int | None  # for ICMP, the echo id is in sport


def parse_flow(text: str) -> Flow:
    m = FLOW.match(text)
    if not m:
        raise ValueError(f"cannot read flow {text!r}")
    port = (lambda s: int(s) if s.isdigit() and int(s) else None)
    return Flow(m["proto"], m["src"], port(m["sport"]), m["dst"], port(m["dport"]))


def pair(a: str, b: str) -> str:
    return f"(host {a} and host {b})"


def flow_filter(flow: Flow) -> str:
    """The flow's own unprotected packets, both directions."""
    if flow.proto == "icmp":
        echo = "(icmp[icmptype] = icmp-echo or icmp[icmptype] = icmp-echoreply)"
        ident = f" and icmp[4:2] = {flow.sport}" if flow.sport is not None else ""
        return f"icmp and {pair(flow.src, flow.dst)} and {echo}{ident}"
    ports = " and ".join(f"{flow.proto} port {p}" for p in (flow.sport, flow.dport) if p is not None)
    return f"{flow.proto} and {pair(flow.src, flow.dst)}" + (f" and {ports}" if ports else "")


def esp_filter(pairs: set[tuple[str, str]], spis: set[str]) -> str:
    expr = f"{ESP} and ({' or '.join(pair(a, b) for a, b in sorted(pairs))})"
    if spis:  # the SA's own SPIs, where they sit in ESP and in ESP-in-UDP
        expr += " and (" + " or ".join(f"ip[{IHL}:4] = 0x{s} or udp[8:4] = 0x{s}" for s in sorted(spis)) + ")"
    return expr


def ah_filter(pairs: set[tuple[str, str]], spis: set[str], inner_esp: bool = False,
              flow: Flow | None = None) -> str:
    """AH between `pairs` with one of `spis`; given `flow`, AH carrying that flow's own packets
    (AH leaves the inner header readable), so the SA named is the one that carried it."""
    expr = f"ip proto 51 and ({' or '.join(pair(a, b) for a, b in sorted(pairs))})"
    if spis:
        expr += " and (" + " or ".join(f"ip[{IHL}+4:4] = 0x{s}" for s in sorted(spis)) + ")"
    if inner_esp:
        return expr + f" and ip[{IHL}] = 50"
    return expr + (f" and {ah_carries(flow)}" if flow else "")


def ah_carries(flow: Flow) -> str:
    """The flow's transport header behind AH: right after it (transport mode), or after the
    inner IP header (tunnel mode, next header 4: IP in IP)."""
    num = TRANSPORT_NUMBERS[flow.proto]
    inner_ip = f"({AH_DATA} + ((ip[{AH_DATA}]&0xf)<<2))"
    return (f"((ip[{IHL}] = {num} and {_header(flow, AH_DATA)}) or "
            f"(ip[{IHL}] = 4 and ip[{AH_DATA}+9] = {num} and {_header(flow, inner_ip)}))")


def _header(flow: Flow, at: str) -> str:
    """The flow's ports (either way), or its ICMP echo id, in the transport header at `at`."""
    if flow.proto == "icmp":
        echo = f"(ip[{at}] = 0 or ip[{at}] = 8)"
        return f"({echo} and ip[{at}+4:2] = {flow.sport})" if flow.sport is not None else echo
    src, dst = f"ip[{at}:2]", f"ip[{at}+2:2]"
    known = [p for p in (flow.sport, flow.dport) if p is not None]
    if len(known) == 2:
        return (f"(({src} = {flow.sport} and {dst} = {flow.dport}) or "
                f"({src} = {flow.dport} and {dst} = {flow.sport}))")
    if known:
        return f"({src} = {known[0]} or {dst} = {known[0]})"
    return "1 = 1"


def count(captures: list[Path], expr: str) -> int:
    """Packets matching `expr` across every capture, as tcpdump counts them."""
    total = 0
    for pcap in captures:
        if pcap.stat().st_size == 0:
            continue
        out = subprocess.run([tcpdump(), "-r", str(pcap), "-n", expr], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"tcpdump -r {pcap} {expr!r}: {out.stderr.strip()}")
        total += sum(1 for line in out.stdout.splitlines() if line.strip())
    return total


def tcpdump() -> str:
    return shutil.which("tcpdump") or "/usr/bin/tcpdump"


def disagreement(observed: str, flow: Flow, pairs: set[tuple[str, str]], spis: set[str],
                 captures: list[Path]) -> str | None:
    """None when tcpdump's counts agree with `observed`; else one line saying what it saw.
    `pairs`: the IPsec endpoints besides the two hosts; `spis`: the SA's, as list-sas showed."""
    kind = observed  # the bare result: a verdict's IKE outcome is a field of its own
    own = flow_filter(flow)
    if kind == "clear":
        n = count(captures, own)
        return None if n else f"clear, yet tcpdump saw none of the flow's packets ({own})"
    if kind not in ("esp", "ah", "ah+esp"):
        return None
    pairs = pairs | {(flow.src, flow.dst)}
    leaked = count(captures, f"({own}) and {DATA[flow.proto]}")
    if kind == "esp":
        expr = esp_filter(pairs, spis)
    else:
        expr = ah_filter(pairs, spis, inner_esp=kind == "ah+esp", flow=flow)
    protected = count(captures, expr)
    problems = []
    if not protected:
        problems.append(f"no packet matches {expr!r}")
    if leaked:
        problems.append(f"{leaked} of the flow's packets carried data in clear")
    return f"{kind}, yet tcpdump: " + "; ".join(problems) if problems else None


def report_captures(report, folder: Path) -> list[Path]:
    """The pcaps this report names (a matrix run's are under wave-N/): never a file left in the
    folder by an earlier run, which would make the recount compare against other packets."""
    return sorted(folder / rel for rel in report.artifacts.values()
                  if rel.endswith(".pcap") and (folder / rel).is_file())


def check_report(report, folder: Path) -> list[str]:
    """Every esp / ah / clear verdict of a RunReport, checked against its report folder's
    captures. Returns one line per disagreement."""
    captures = report_captures(report, folder)
    if not captures:
        return [f"no capture named by the report in {folder}"]
    out = []
    for v in report.verdicts:
        if str(v.observed) not in ("esp", "ah", "ah+esp", "clear"):
            continue
        sa = v.evidence.sa
        hosts = {v.source, v.destination, sa.host if sa else None}
        pairs = {(r.local, r.peer) for r in report.sas if r.host in hosts and r.local and r.peer}
        spis = {s for s in (sa.spi_in, sa.spi_out) if s} if sa else set()
        why = disagreement(str(v.observed), parse_flow(v.evidence.flow), pairs, spis, captures)
        if why:
            out.append(f"{v.id}: the lab says {why}")
    return out
