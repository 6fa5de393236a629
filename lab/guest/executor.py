"""Run one plan on this kernel: bring the hosts up, send the probes, record, tear everything down.

Invoked as `python -m lab.guest.executor PLAN SECRETS WORKDIR`, either inside the User-Mode
Linux guest or directly on a host kernel that has ESP and AH. It imports only the standard
library and `vici`, because in the guest every import costs a multiple of the host's. It
writes `results.json`, the captures and the daemons' logs to the plan's `outdir` and prints
progress as `@@lab {json}` lines for the host to display. Whatever happens, every namespace
and process it started is gone when it exits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from lab.contract import Outcome, Plan, Results, read_plan, write_results
from lab.guest import (PROGRESS, backends, capture, charon, cpu, finality, firewall, netns, replyguard, servers,
                       softsa, tamper, traffic, xfrm)


def progress(phase: str, message: str, **extra) -> None:
    print(PROGRESS + json.dumps({"phase": phase, "message": message, "t": time.time(), **extra}), flush=True)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


class Run:
    def __init__(self, plan: Plan, psk: str, workdir: str, keys: dict | None = None,
                 secrets_extra: dict | None = None):
        self.plan, self.psk, self.workdir = plan, psk, workdir
        self.keys = keys or {}  # host -> private key (authentication: certificates); never written
        self.outdir = plan.outdir
        self.charons: dict[str, charon.Charon] = {}
        self.captures: list[capture.Capture] = []
        self.captures_ready = False
        self.listeners = traffic.Listeners()
        self.agents: list[softsa.SoftSaAgent] = []
        self.server_secrets = (secrets_extra or {}).get("servers", {})  # TLS keys, probe passwords
        self.servers = servers.Servers(workdir, self.server_secrets.get("files"))  # real daemons
        self.backend = backends.backend_class(plan.provider)(plan, workdir)  # netns or docker
        self.servers.on_host = self.backend.command  # real servers run on their host (its container)
        self.results = Results(run_id=plan.run_id)
        self._t, self._cpu_at = time.monotonic(), cpu.sample([])

    def _stepper(self, key: str):
        """Seconds spent in each step of a phase, into results.<key> (where the time goes), and
        the guest's CPU seconds in it, into results.cpu_steps (who spent them)."""
        steps, last = getattr(self.results, key), [time.monotonic(), self._cpu()]

        def mark(step: str) -> None:
            now, used = time.monotonic(), self._cpu()
            steps[step] = round(now - last[0], 3)
            self.results.cpu_steps[step] = cpu.spent(last[1], used)
            last[0], last[1] = now, used
        return mark

    def _cpu(self) -> dict:
        return cpu.sample([c.proc.pid for c in self.charons.values() if getattr(c.proc, "pid", None)])

    def _phase_done(self, name: str) -> None:
        now, used = time.monotonic(), self._cpu()
        self.results.timings[name] = round(now - self._t, 3)
        self.results.cpu_steps[name] = cpu.spent(self._cpu_at, used)
        self._t, self._cpu_at = now, used

    def bring_up(self) -> None:
        hosts = self.plan.hosts
        progress("bring-up", f"{len(hosts)} hosts, {len(self.plan.networks)} networks")
        mark = self._stepper("bring_up_steps")

        def start_charons() -> None:
            logs = os.path.join(self.outdir, "logs")  # charon writes its log straight into the report
            os.makedirs(logs, exist_ok=True)
            for h in hosts:
                if h["charon"] is not None:
                    self.charons[h["name"]] = self.backend.charon(h, logs)
                    self.charons[h["name"]].settings = {"load_legacy": charon.legacy_needed(h["charon"]["conns"]),
                                                        **h["charon"].get("settings", {})}
            for c in self.charons.values():
                c.start()

        # With namespaces, each charon starts as soon as its namespace exists: its second of
        # start-up in the guest runs while links, addresses, filters and captures are set up (it
        # learns its addresses as they come; it sends nothing before its connections are loaded).
        early = self.backend.create(progress, on_namespaces=start_charons)
        mark("namespaces")
        for h in hosts:  # packet filter and NAT on firewall hosts (tc, one process each)
            if h.get("firewall"):
                firewall.apply(h["ns"], h["firewall"])
                progress("bring-up", f"firewall on {h['name']}: {len(h['firewall']['filters'])} tc filters")
        for h in hosts:  # an IKEv1 Respond Only host: no clear reply to a protected request
            if h.get("reply_guard"):
                replyguard.apply(h["ns"], h["reply_guard"])
        mark("firewalls")
        started = self.servers.start(hosts)  # real daemons come up while the charons do
        if started:
            progress("bring-up", "real servers: " + ", ".join(started))
        os.makedirs(os.path.join(self.outdir, "captures"), exist_ok=True)
        self.captures = [capture.Capture(self.plan.switch_ns, n, os.path.join(self.outdir, "captures"))
                         for n in self.plan.networks]
        if not early:  # a backend that wires its hosts first: their charons start now
            start_charons()
        mark("charons_started")
        # Each daemon costs the guest's one CPU its start-up: the wait grows with their number
        # (80 hosts on a loaded machine took 70 s to load; a fixed 30 s made a slow lab an error).
        deadline = time.monotonic() + 30 + 1.0 * len(self.charons)
        for h in hosts:
            c = self.charons.get(h["name"])
            if c:
                c.connect(deadline)
                c.load(h["charon"]["conns"], self.psk, self._credentials(h["name"]))
                relaxed = xfrm.relax_inbound(h["ns"], h["charon"].get("inpass", []))
                if h["charon"].get("fallback"):
                    agent = softsa.SoftSaAgent(c, h["charon"]["fallback"])
                    agent.start()
                    self.agents.append(agent)
                note = f", inbound passthrough on {len(relaxed)} policies" if relaxed else ""
                progress("bring-up", f"charon on {h['name']}: {len(h['charon']['conns'])} connections loaded{note}")
        mark("charons_loaded")
        self.listeners.start(hosts)
        mark("listeners")
        if self.servers.pending:  # started in parallel with the charons (lab.guest.servers)
            self.results.timings["real_servers_ready"] = self.servers.wait(deadline)
            progress("bring-up", f"real servers listening after {self.results.timings['real_servers_ready']:.2f} s")
        ready_by = time.monotonic() + 30  # started long ago: their own wait, not what is left
        for cap in self.captures:
            cap.wait_ready(ready_by)
        self.captures_ready = True
        mark("captures_ready")
        self._phase_done("bring_up")

    def _credentials(self, host: str) -> dict | None:
        """The lab CA, its CRL, the host's certificate and key; None with preshared keys."""
        pki = self.plan.pki
        if not pki:
            return None
        return {"ca": pki["ca"], "crl": pki["crl"], "cert": pki["certs"].get(host), "key": self.keys.get(host)}

    def fail_over(self) -> None:
        from lab.guest import failover  # only here: its imports (secrets, hmac) cost 0.07 s in the guest
        self.results.failover = failover.run(self.plan.failover, self.charons, progress)
        time.sleep(0.3)
        self.results.received = list(self.listeners.received)
        self._phase_done("failover")

    def probe(self) -> None:
        progress("probes", f"{len(self.plan.probes)} probes, concurrently")
        # Waiting probes stop once the evidence that they cannot be delivered is final.
        # Real clients too, but for the mail logins (their timeouts are the sockets' own).
        self.deadlines = {p["id"]: traffic.Deadline(p["timeout"]) for p in self.plan.probes
                          if not p.get("tamper") and not p.get("bulk") and not p.get("proxied")
                          and (p.get("client") or {}).get("kind") not in ("imap", "pop3")}
        watcher = finality.Finality(self.plan, self.charons)
        watcher.start(self.plan.probes, self.deadlines)
        try:
            outcomes = self._real_and_lab_probes()
        finally:
            watcher.stop()
        if watcher.given_up:
            self.results.given_up = watcher.given_up
        ns_of = self.plan.ns_of()
        for p in self.plan.probes:
            if p.get("tamper"):  # one at a time, after the others: the router alters the pair's packets
                progress("probes", f"tamper: {p['tamper']['router']} alters {p['src']}->{p['dst']} {p['service']} in flight")
                outcomes.append(tamper.run_tampered(p, ns_of[p["src"]]))
        for p in self.plan.probes:
            if p.get("bulk") and not p.get("tamper"):  # one at a time: concurrent transfers share one CPU
                progress("probes", f"bulk: {p['bulk'] // 1024} KiB {p['src']}->{p['dst']} {p['service']}")
                outcomes.append(traffic.run_probe(p, ns_of[p["src"]]))
        if any(p.get("via", "unicast") != "unicast" for p in self.plan.probes):
            time.sleep(0.3)  # one-way probes are judged by their listeners: let the last copies land
        received = list(self.listeners.received)
        by_id = {o["id"]: o for o in outcomes}
        for p in self.plan.probes:
            if p["id"] in by_id and p.get("via", "unicast") != "unicast":
                # one-way: delivered = the target's listener got it
                by_id[p["id"]]["delivered"] = any(r["marker"] == p["marker"] and r["host"] == p["dst"]
                                                  for r in received)
        # Checked here, where they are made: an outcome the contract does not know fails the run.
        self.results.probes = [Outcome.from_json(by_id[p.id], f"outcome of probe {p.id}")
                               for p in self.plan.probes if p.id in by_id]
        self.results.received = received
        self._phase_done("probes")

    def _real_and_lab_probes(self) -> list[dict]:
        """Lab probes and real clients at once; then the proxied legs from the back-ends' logs."""
        probes = [p for p in self.plan.probes if not p.get("tamper")]
        real = [p for p in probes if p.get("client")]
        proxied = [p for p in probes if p.get("proxied")]
        lab = [p for p in probes if p not in real and p not in proxied]
        if not real and not proxied:
            return traffic.run_probes(self.plan, self.deadlines)
        from lab.guest import clients
        ns_of = self.plan.ns_of()
        got: dict[str, list] = {}
        t = threading.Thread(target=lambda: got.setdefault("real", clients.run_clients(
            real, ns_of, self.workdir, self.server_secrets.get("passwords", {}), self.deadlines)), daemon=True)
        t.start()
        outcomes = traffic.run_probes(dataclasses.replace(self.plan, probes=lab), self.deadlines)
        t.join()
        outcomes += got.get("real", [])
        by_id = {o["id"]: o for o in outcomes}
        markers = {p["id"]: p["marker"] for p in self.plan.probes}
        logs = self._proxied_logs(proxied, by_id, markers)
        return outcomes + clients.proxied_outcomes(proxied, by_id, logs, markers)

    def _proxied_logs(self, proxied: list[dict], by_id: dict, markers: dict, grace: float = 3.0) -> dict:
        """The back-ends' access logs, once they hold every proxied request whose client got its
        answer. nginx writes the line after sending the answer: on a loaded machine the front-end
        relayed it and the client finished first, and the log was read a moment too early ("the
        back-end never logged the proxied request", with the request in ESP on the wire)."""
        expected = [p for p in proxied if by_id.get(p["proxied"]["of"], {}).get("delivered")]
        deadline = time.monotonic() + grace
        while True:
            logs = {p["dst"]: self.servers.log(p["dst"], p["proxied"]["log"]) for p in proxied}
            if time.monotonic() > deadline or all(
                    f"/{markers[p['proxied']['of']]}" in logs[p["dst"]] for p in expected):
                return logs
            time.sleep(0.05)

    def collect(self) -> None:
        progress("collect", "SAs, policies and XFRM state from every IPsec host")
        mark = self._stepper("collect_steps")
        sas, policies, xfrm, events = {}, {}, {}, {}
        for name, c in self.charons.items():
            events[name] = c.events
            try:
                sas[name] = c.list_sas()
                policies[name] = c.list_policies()
            except Exception as exc:
                sas[name], policies[name] = [], []
                note = f"{name}: no SA list ({type(exc).__name__}: {exc})"
                # A crash scenario kills a daemon on purpose; anywhere else it is an error.
                (self.results.notes if self.plan.failover else self.results.errors).append(note)
        mark("sa_lists")
        for h in self.plan.hosts:
            xfrm[h["name"]] = self._xfrm(h["ns"]) if h["charon"] is not None else None
        mark("xfrm")
        soft = {a.charon.host: a.installed for a in self.agents}
        counters = {h["name"]: firewall.counters(h["ns"], h["firewall"])
                    for h in self.plan.hosts if h.get("firewall")}
        if counters:
            self.results.firewall = counters
        self.results.held_replies = {h["name"]: replyguard.held(h["ns"], h["reply_guard"])
                                     for h in self.plan.hosts if h.get("reply_guard")}
        self.results.sas, self.results.policies, self.results.xfrm = sas, policies, xfrm
        self.results.events, self.results.soft_sas = events, soft
        self.results.host_checks = self.backend.checks(xfrm)
        self.results.module_requests = _module_requests()
        self._phase_done("collect")

    @staticmethod
    def _xfrm(ns: str) -> dict:
        # Over netlink from this process, without keys (lab.guest.xfrm.states): a listing
        # process per host cost 4-9 s of the guest's one CPU with 40 hosts. The policies are
        # not listed: nothing reads them, and iproute2 6.1 had printed them empty anyway.
        return {"state": xfrm.states(ns), "stat": xfrm.stats(ns)}

    def tear_down(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.listeners.stop()
        self.servers.stop(os.path.join(self.outdir, "logs"))
        if self.captures_ready:  # every frame the bridges carried is in the files before they close
            late = capture.drain(self.captures, self.plan.switch_ns, timeout=2.0)
            if late:
                self.results.notes.append(f"captures of {', '.join(late)} did not show their end frame within 2 s")
        for cap in self.captures:
            cap.stop()
        for c in self.charons.values():
            c.stop()
        for cap in self.captures:
            cap.reap(grace=3)
        for c in self.charons.values():
            c.reap(grace=3)
        logs = os.path.join(self.outdir, "logs")
        os.makedirs(logs, exist_ok=True)
        for name, c in self.charons.items():
            kept = os.path.join(logs, f"charon-{name}.log")
            if os.path.exists(c.log_path) and os.path.abspath(c.log_path) != kept:
                shutil.copy(c.log_path, kept)
        self.results.docker = self.backend.destroy(logs)
        netns.destroy([self.plan.switch_ns] + [h["ns"] for h in self.plan.hosts])
        # Seen from this kernel, the only place they live (a UML guest's /run/netns is its own
        # tmpfs): the hygiene checks on the host read this list, which must be empty.
        self.results.namespaces_left = netns.existing(f"lab-{self.plan.run_id}-")
        self._phase_done("teardown")

    def write(self) -> None:
        write_results(os.path.join(self.outdir, "results.json"), self.results)


def _module_requests() -> list[str] | None:
    """The module names the kernel asked the guest's modprobe wrapper for (lab.kernels.uml);
    after the boot-time crypto warm-up a run should need none. None where there is no wrapper."""
    path = os.environ.get("LAB_MODPROBE_LOG")  # set by the guest's init, which installs the wrapper
    if not path:
        return None
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def boot_marks(marks: str, executor: float, ready: float) -> dict[str, float]:
    """The guest init's marks (`kernel=1.38 mounts=1.46 ...`) and this executor's own, as the
    guest's uptime at each, in order: where the boot went. `python` is when this executor got
    to run (interpreter and imports, started after `mounts`, in parallel with `modules` and
    `crypto` when those come later); `kernel_ready` when it found modules and crypto done."""
    points = [(float(v), k) for k, _, v in (m.partition("=") for m in marks.split()) if v]
    points += [(executor, "python"), (ready, "kernel_ready")]
    return {name: round(t, 3) for t, name in sorted(points)}


def wait_for_kernel(timeout: float = 120.0) -> str:
    """In a UML guest whose init loads modules and warms the crypto up while this Python
    starts: wait until it is done (its marks are in the file), then say the guest is booted."""
    path = os.environ.get("LAB_KERNEL_READY")
    marks = os.environ.get("LAB_BOOT", "")
    if path:
        deadline, marks = time.monotonic() + timeout, ""
        while not marks.endswith("\n"):  # one echo: the file exists a moment before its line
            if time.monotonic() > deadline:
                raise RuntimeError("the guest's module loading and crypto warm-up did not finish")
            time.sleep(0.01)
            try:
                with open(path) as f:
                    marks = f.read()
            except FileNotFoundError:
                pass
        print(f"@@guest booted {os.uname().release}", flush=True)
    return marks


def phases(run: Run) -> list:
    """The executor's phases, in order; teardown runs after them however they end. Real servers
    come up inside bring-up, in parallel with the charons (each costs the guest seconds)."""
    return [run.bring_up, run.fail_over if run.plan.failover else run.probe, run.collect]


def main(argv: list[str]) -> int:
    plan_path, secrets_path, workdir = argv
    signal.signal(signal.SIGTERM, _terminate)
    started = _uptime() if os.environ.get("LAB_BOOT") is not None else None
    marks = wait_for_kernel()
    ready = _uptime() if started is not None else 0.0
    plan = read_plan(plan_path)  # its version and fields checked (lab.contract)
    with open(secrets_path) as f:
        secrets = json.load(f)
    os.unlink(secrets_path)  # read once; nothing on disk holds a key after this
    os.makedirs(workdir, exist_ok=True)
    run = Run(plan, secrets["psk"], workdir, secrets.get("keys"), secrets)
    if started is not None:  # a UML guest: where its boot went
        run.results.boot_marks = boot_marks(marks, started, ready)
    status = 0
    try:
        for phase in phases(run):
            phase()
    except BaseException as exc:  # record, then tear down whatever was started
        run.results.errors.append(f"{type(exc).__name__}: {exc}")
        progress("error", str(exc) or type(exc).__name__)
        status = 1 if isinstance(exc, Exception) else 130
    finally:
        try:
            run.tear_down()
        finally:
            run.write()
    progress("done", "torn down", status=status)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
