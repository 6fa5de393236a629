"""One lab run: load -> compile -> choose the kernel -> run the executor -> judge -> report.

Everything a run creates lives in one run directory under the state directory, owned by this
process (owner.pid) so that `lab cleanup` can tell a killed run's leftovers from a live one's.
The run directory is removed when the run ends, however it ends; the report directory keeps
the evidence (captures, daemon logs, results), with the preshared key scrubbed from it.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import secrets
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from lab import cleanup, images, preflight, programs
from lab.compile.plan import build_plan, destination_address
from lab.selectors import covers
from lab.contract import ContractError, Outcome, Plan, Probe, Results, read_results, write_plan
from lab.errors import LabError, ProviderError
from lab.guest.backends import backend_class
from lab.model.load import load_topology
from lab.services.prepare import RunServers
from lab.services.prepare import prepare as prepare_servers
from lab.kernels.base import ProgressFn, RunFiles, new_run_dir
from lab.verdicts.model import RunReport

if TYPE_CHECKING:
    from lab.pki import LabPki
    from lab.verdicts.failover import FailoverResult

# What judging and the report need, and nothing before: scapy alone takes 0.4-0.75 s to
# import. They are imported in a thread while the guest runs (on the machine's other core),
# so the guest starts that much sooner and its results find them loaded.
JUDGING = ("lab.verdicts.wire", "lab.verdicts.classify", "lab.verdicts.ike", "lab.verdicts.firewall",
           "lab.verdicts.failover", "lab.report")


class Preload:
    """Imports `modules` in a background thread, started once the lab kernel's process runs
    (at its first progress line: not while the guest is being forked, which a thread holding
    import locks must not meet) and joined before judging. A module that fails to import is
    left to fail again, with its traceback, where the main thread imports it."""

    def __init__(self, modules: tuple[str, ...] = JUDGING):
        self.modules, self.thread = modules, None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._work, name="preload", daemon=True)
            self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def _work(self) -> None:
        for name in self.modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001  re-raised by the main thread's own import
                return
        from lab.report.html import template
        template()  # jinja2 compiles the page's template once per process: 0.15 s


def _quiet(_event: dict) -> None:
    pass


def write_inputs(files: RunFiles, plan: Plan, psk: str, pki: LabPki | None = None,
                 extra: dict | None = None) -> None:
    """The plan, complete and frozen (no secrets; with certificates, the lab CA's public parts),
    and the secrets file (0600; the preshared key and the hosts' private keys), which the
    executor deletes once read."""
    write_plan(files.plan, plan)
    fd = os.open(files.secrets, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"psk": psk, **(pki.secret() if pki else {}), **(extra or {})}, f)


@dataclass
class Execution:
    """One finished executor run, before its run directory goes away."""

    run_id: str
    kernel: str
    plan: Plan
    results: Results
    outdir: str
    boot_seconds: float
    pki: LabPki | None = None  # the run's lab CA (authentication: certificates)
    servers: RunServers | None = None  # real servers' secrets, host side (lab.services)


@contextmanager
def executed(topology, kernel: str, on_progress: ProgressFn, psk: str | None, provider: str,
             failover: str | None = None, pki: LabPki | None = None, report_dir: str | None = None):
    """Run the executor for one plan; yield what it produced; remove the run directory after."""
    # Every program this design starts (real servers and clients too), before anything starts.
    preflight.check_programs(programs.needs_of(topology, provider, failover=failover is not None, uml=False))
    preflight.check_provider(provider)
    choice = preflight.choose_kernel(kernel)
    on_progress({"phase": "kernel", "message": choice.describe()})
    cleanup.sweep(on_progress)  # leftovers of killed runs go first
    run_id, files = new_run_dir()
    psk = psk or secrets.token_urlsafe(24)
    try:  # from here on the run directory is removed however the run ends (a Ctrl-C in build_pki too)
        if topology.auth_method == "certificates" and pki is None:
            from lab.pki import build_pki
            pki = build_pki(topology)  # a fresh lab CA per run; its keys go to the secrets file only
        plan = build_plan(topology, run_id, files.outdir, failover=failover, provider=provider)
        servers = prepare_servers(topology, plan, files.rundir, pki)  # real daemons, real clients
        if provider == "docker":  # built once, offline, from Debian packages; then reused by their tags
            plan.image = images.for_plan(plan, on_progress, seed=choice.kind == "uml")
        plan.pki = pki.public() if pki else None
        plan.freeze()  # complete: written once, read by the executor, never changed
        write_inputs(files, plan, psk, pki, servers.secret())
        lab_kernel = choice.kernel(run_id, files, plan, boot=backend_class(provider).boot_lines)
        on_progress({"phase": "start", "message": f"run {run_id} on {choice.describe()}"})
        judging = Preload()

        def progress(event: dict) -> None:
            judging.start()
            on_progress(event)
        try:
            lab_kernel.run(progress)
        finally:
            judging.join()
        yield Execution(run_id, choice.describe(), plan, _read_results(files), files.outdir,
                        lab_kernel.boot_seconds or 0.0, pki, servers), psk
    except ProviderError as exc:  # the run directory goes: first keep what explains the failure
        kept = keep_failure(files, report_dir, psk, pki) if report_dir else None
        raise ProviderError(f"{exc}; console log: {kept}" if kept else str(exc)) from None
    finally:
        if report_dir:
            keep_console(files, report_dir, psk, pki)
        shutil.rmtree(files.rundir, ignore_errors=True)


def run(topology_path: str, report_dir: str, kernel: str = "auto",
        on_progress: ProgressFn = _quiet, psk: str | None = None, provider: str = "netns",
        pki: LabPki | None = None, secret_sink: list[bytes] | None = None,
        topology=None) -> RunReport:
    """Run one topology and judge its expectations. `psk`, `pki` and `secret_sink` (which
    receives the servers' generated passwords) are for tests that check secrets never leak.
    `topology`: an already loaded model to run instead (lab verify --matrix swaps in the
    predicted flows as expectations)."""
    started = time.monotonic()
    topology = topology or load_topology(topology_path)
    with executed(topology, kernel, on_progress, psk, provider, pki=pki, report_dir=report_dir) as (ex, psk_used):
        plan = ex.servers.with_credentials(ex.plan)  # the logins as they crossed the wire, host side
        if secret_sink is not None:
            secret_sink.extend(ex.servers.secrets())
        report = judge_run(topology, plan, ex.results, ex.outdir)
        report.run_id, report.kernel = ex.run_id, ex.kernel
        report.timings = {"guest_boot": round(ex.boot_seconds, 3), **ex.results.timings}
        report.artifacts = keep_artifacts(ex.outdir, report_dir, psk_used, ex.pki)
        if ex.pki:  # public: the CA certificate, the machine certificates and the CRL
            report.artifacts.update(ex.pki.write_public(report_dir))
        ex.servers.scrub(report_dir)  # the probe users' passwords, blanked in captures and logs
    report.timings["total"] = round(time.monotonic() - started, 3)
    return report


def run_failover(topology_path: str, scenario: str, report_dir: str, kernel: str = "auto",
                 on_progress: ProgressFn = _quiet, provider: str = "netns") -> FailoverResult:
    """Bring the topology up, stream requests to the cluster's VIP and move it (one scenario)."""
    topology = load_topology(topology_path)
    if scenario not in {f.name for f in topology.failovers}:
        known = ", ".join(f.name for f in topology.failovers) or "none"
        raise LabError(f"--scenario: no failover {scenario!r} in {topology_path} (known: {known})")
    f = next(x for x in topology.failovers if x.name == scenario)
    from lab.verdicts.failover import judge_failover
    from lab.verdicts.wire import read_capture
    with executed(topology, kernel, on_progress, None, provider, failover=scenario, report_dir=report_dir) as (ex, psk_used):
        if ex.results.failover is None:
            raise ProviderError(f"the failover run stopped early: {ex.results.errors}")
        packets = []
        for net in (n["name"] for n in ex.plan.networks):
            packets += read_capture(net, os.path.join(ex.outdir, "captures", f"{net}.pcap"))
        src = topology.host(f.source)
        timers = topology.policy(src.policy).timers if src.policy else None
        profile = "none" if not timers else timers.name + (f" x{timers.time_scale:g}" if timers.time_scale != 1 else "")
        result = judge_failover(ex.plan.failover, ex.results.failover, ex.results.events,
                                packets, profile, ex.results.received,
                                line=f.where.line if f.where else None)
        result.run_id, result.kernel = ex.run_id, ex.kernel
        result.artifacts = keep_artifacts(ex.outdir, report_dir, psk_used, ex.pki)
    return result


def _read_results(files: RunFiles) -> Results:
    path = Path(files.outdir, "results.json")
    if not path.exists():
        tail = Path(files.console).read_text(errors="replace").strip().splitlines()[-2:] \
            if Path(files.console).exists() else []
        raise ProviderError("the executor wrote no results" + (": " + " | ".join(tail) if tail else ""))
    try:
        return read_results(str(path))
    except ContractError as exc:
        raise ProviderError(f"the executor's results do not match this lab: {exc}") from None


def _scrubbed(data: bytes, psk: str, pki: LabPki | None) -> bytes:
    data = data.replace(psk.encode(), b"[preshared key removed]")
    for m in [m for m in (pki.secret_material() if pki else []) if len(m) >= 16]:
        data = data.replace(m, b"[private key removed]")
    return data


def keep_console(files: RunFiles, report_dir: str, psk: str, pki: LabPki | None = None) -> str | None:
    """The guest's console (kernel and init output) into `<report>/logs/console.log`."""
    src = Path(files.console)
    if not src.exists():
        return None
    dst = Path(report_dir, "logs", "console.log")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(_scrubbed(src.read_bytes(), psk, pki))
    return str(dst)


def keep_failure(files: RunFiles, report_dir: str, psk: str, pki: LabPki | None = None) -> str | None:
    """A run that failed keeps what explains it: the console, every daemon log the executor
    got out and its raw results. Returns the console log's path in the report."""
    keep_artifacts(files.outdir, report_dir, psk, pki)
    return keep_console(files, report_dir, psk, pki)


def judge_run(topology, plan: Plan, results: Results, outdir: str) -> RunReport:
    from lab.verdicts import ike as ike_log
    from lab.verdicts.classify import child_sas, judge, unjudged
    from lab.verdicts.firewall import FirewallJudge
    from lab.verdicts.wire import read_capture

    networks = [n["name"] for n in plan.networks]
    packets = []
    for net in networks:
        packets += read_capture(net, os.path.join(outdir, "captures", f"{net}.pcap"))
    rows = child_sas(results.sas)
    outcomes = {o.id: o for o in results.probes}
    logs = ike_log.IkeLogs(os.path.join(outdir, "logs"))  # read once for every flow
    verdicts = []
    firewall = FirewallJudge(plan, results)  # where a dropped flow was stopped (B7)
    # The plan made one probe per expectation; each probe names its expectation and each
    # outcome its probe (by id, never by position). A probe without an outcome is a failed
    # verdict, never a silent gap in the count.
    probes = {p.expectation: p for p in plan.probes}
    if set(probes) != {e.id for e in topology.expectations}:
        raise ProviderError(f"the plan's probes ({', '.join(sorted(probes))}) are not the topology's expectations")
    for exp in topology.expectations:
        p = probes[exp.id]
        if p.id not in outcomes:
            verdicts.append(unjudged(p, exp, results.errors))
            continue
        src = topology.host(exp.source)
        node, answered = answering_node(p, results.received)
        if node:  # a cluster: judged against the node that holds the VIP, whose IKE uses the VIP
            p = dataclasses.replace(p, dst=node)
        dst = topology.host(p.dst)
        address = p.cluster["vip"] if node else str(destination_address(src, dst))
        pair = ((src.name, p.src_address), (dst.name, address))
        outcome = outcomes[p.id]
        verdicts.append(judge(p, outcome, results.received, packets, rows, networks, exp,
                              ike=ike_log.outcome(results, logs, *pair, near=outcome.t_start),
                              soft_sa=_soft_sa(results, pair, p, outcome),
                              firewall=firewall or None, answered_by=answered,
                              held_replies=held_replies(results, dst.name)))
    ike = {net: sum(1 for p in packets if p.network == net and p.kind == "ike") for net in networks}
    return RunReport(
        topology=topology.name, description=topology.description, path=topology.path, run_id="",
        kernel="", started=datetime.now(timezone.utc).isoformat(timespec="seconds"), timings={},
        verdicts=verdicts, sas=rows, ike_packets=ike, errors=list(results.errors),
    )


def answering_node(probe: Probe, received: list[dict]) -> tuple[str | None, str | None]:
    """For a probe to a cluster: (the node to judge the flow against, what the verdict says).
    The node whose listener logged the probe's marker answered; with no such record (ICMP,
    answered by the kernel, or a flow that never arrived) it is the node holding the VIP."""
    cluster = probe.cluster
    if not cluster:
        return None, None
    heard = [r["host"] for r in received if r.get("marker") == probe.marker and r["host"] in cluster["nodes"]]
    if heard:
        return heard[0], f"answered by {heard[0]} (node of {cluster['name']}, VIP {cluster['vip']})"
    holder = cluster["holder"]
    return holder, f"{cluster['name']}'s VIP {cluster['vip']} held by {holder}; no node's listener logged the probe"


def held_replies(results: Results, host: str) -> str | None:
    """The host's reply guard (lab.compile.reply_guard) counts per host, not per flow: every
    flow to a host that held replies back says so, and how many."""
    n = results.held_replies.get(host, 0)
    if not n:
        return None
    return (f"{host} held back {n} clear {'reply' if n == 1 else 'replies'} to requests it received "
            "protected (IKEv1 responder: its SA was up before its policies; the sender retried)")


def _soft_sa(results: Results, pair, probe: Probe, outcome: Outcome) -> str | None:
    """Did either host fall back to clear for the other (Windows soft SA) on a rule that covers
    this flow? A require rule towards the same peer gets no soft SA and stays blocked."""
    for (host, _), (_, peer) in (pair, pair[::-1]):
        peer_port = probe.port if host == pair[0][0] else outcome.sport
        for entry in results.soft_sas.get(host, []):
            if entry.get("peer") != peer:
                continue
            # A real client may not report its port: then address and protocol decide.
            if any(covers(ts if peer_port is not None else _without_port(ts), peer, probe.protocol,
                          peer_port or 0) for ts in entry.get("remote_ts", [])):
                return f"{host} fell back to clear for {peer} after {entry['after']:.1f} s of IKE silence (soft SA)"
    return None


def _without_port(ts: str) -> str:
    """`10.10.2.20/32[tcp/80]` -> `10.10.2.20/32[tcp]`."""
    net, _, rest = ts.partition("[")
    return f"{net}[{rest.rstrip(']').partition('/')[0]}]" if rest else net


def keep_artifacts(outdir: str, report_dir: str, psk: str, pki: LabPki | None = None) -> dict[str, str]:
    """Copy captures, logs and raw results into the report, never letting a key through."""
    kept = {}
    private = [m for m in (pki.secret_material() if pki else []) if len(m) >= 16]
    for sub in ("captures", "logs"):
        src = Path(outdir, sub)
        if not src.is_dir():
            continue
        dst = Path(report_dir, sub)
        dst.mkdir(parents=True, exist_ok=True)
        for f in sorted(src.iterdir()):
            # never there (charon logs no key); checked all the same
            (dst / f.name).write_bytes(_scrubbed(f.read_bytes(), psk, pki))
            kept[f"{sub}/{f.name}"] = f"{sub}/{f.name}"
    raw = Path(outdir, "results.json")
    if raw.exists():
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        text = raw.read_text().replace(psk, "[preshared key removed]")
        for m in private:
            text = text.replace(m.decode(), "[private key removed]") if m.isascii() else text
        Path(report_dir, "executor.json").write_text(text)
        kept["executor.json"] = "executor.json"
    return kept
