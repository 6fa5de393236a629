"""Stop waiting for a probe once the evidence that it cannot be delivered is final.

Runs inside the lab kernel, one thread beside the probes. A probe that gets no answer waits
out its 10 s timeout; most of that time is spent after the outcome was already decided. This
watcher tells a waiting probe to give up, GRACE seconds after one of these became true:

- IKE definitively failed between the two hosts, in the responder's words: a notify error the
  initiator received (NO_PROPOSAL_CHOSEN, AUTHENTICATION_FAILED, TS_UNACCEPTABLE), or the
  responder's own reason (no acceptable proposal, a revoked or untrusted certificate, no
  matching peer config, a MAC mismatch), or the kernel refusing the negotiated SA; logged
  after the probe started, and no IKE_SA between the two still negotiating (list-sas).
- A firewall on the path drops every carrier the flow could use (its own packets; and ESP,
  AH, ESP in UDP 4500 when the sender runs IPsec: the first filter each meets is a drop) and those filters' counters rose
  while the probe waited: packets reached the firewall and were dropped there.

Silence alone (no answer, nothing counted) still waits for the timeout, and nothing is cut
short where a host falls back to clear after IKE silence (Windows' soft SA: that 3 s wait is
the behaviour under test). The host still judges every flow from the captures; this only
decides when to stop listening.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time

import vici

from lab.compile.fwmatch import matches
from lab.guest import firewall
from lab.guest.charon import decode
from lab.guest.traffic import Deadline

GRACE = 1.5  # seconds from final evidence to giving up: packets still in flight may land
POLL = 0.25
PROTO = {"tcp": 6, "udp": 17, "icmp": 1}

# In the initiator's log: the responder said no.
_TOLD = re.compile(r"received (NO_PROPOSAL_CHOSEN|AUTHENTICATION_FAILED|TS_UNACCEPTABLE|"
                   r"FAILED_CP_REQUIRED|NO_ADDITIONAL_SAS) (?:error )?notify")
# In the responder's log: its own reason for refusing.
_REFUSED = re.compile(r"no acceptable proposal found|certificate was revoked|no trusted \w+ public key found|"
                      r"no matching peer config found|MAC mismatched|no acceptable traffic selectors found|"
                      r"constraint check failed|certificate status is not available|"
                      r"unable to add SAD entry")
_TAG = re.compile(r"\[\w+\] <([^>]+)> (.*)$")
_ADDR = re.compile(r"(?:to|from) (\d+\.\d+\.\d+\.\d+)")


class LogTail:
    """New lines of one charon log, with the failures in them by peer and wall-clock time."""

    def __init__(self, path: str):
        self.path, self.pos = path, 0
        self.peer_of: dict[str, str] = {}
        self.failures: list[tuple[float, str, str]] = []  # (time read, peer, line)

    def read(self) -> None:
        try:
            with open(self.path, errors="replace") as f:
                f.seek(self.pos)
                text = f.read()
        except FileNotFoundError:
            return
        complete = text[:text.rfind("\n") + 1]
        self.pos += len(complete.encode(errors="replace"))
        now = time.time()
        for line in complete.splitlines():  # each line stamped with when it was read
            m = _TAG.search(line)
            if not m:
                continue
            tag, msg = m.group(1).rpartition("|")[2], m.group(2)
            addr = _ADDR.search(msg)
            if addr and tag not in self.peer_of:
                self.peer_of[tag] = addr.group(1)
            if (_TOLD.search(msg) or _REFUSED.search(msg)) and tag in self.peer_of:
                self.failures.append((now, self.peer_of[tag], msg.strip()))

    def failed_with(self, peer: str, since: float) -> str | None:
        return next((msg for t, p, msg in self.failures if p == peer and t >= since), None)


class Finality:
    def __init__(self, plan: dict, charons: dict):
        self.plan, self.charons = plan, charons
        self.hosts = {h["name"]: h for h in plan["hosts"]}
        self.aliases = {v: k for k, v in (plan.get("nat_aliases") or {}).items()}  # outside -> inside
        self.subnets = {n["name"]: ipaddress.ip_network(n["subnet"]) for n in plan["networks"]}
        self.tails = {name: LogTail(c.log_path) for name, c in charons.items() if hasattr(c, "log_path")}
        self.sessions: dict[str, vici.Session] = {}
        self.given_up: list[dict] = []  # what the run records: probe, reason, when
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._baseline: dict[str, dict] = {}

    # ---- which probes may be cut short at all ------------------------------------------------

    def _watchable(self, probe: dict) -> bool:
        if probe.get("cluster") or probe["dst"] not in self.hosts:
            return False  # to a cluster's VIP: whichever node holds it answers; not judged early
        for name in (probe["src"], probe["dst"]):
            c = self.hosts[name].get("charon") or {}
            if c.get("fallback"):
                return False  # a soft SA may still come: Windows timing is under test
        return probe.get("via", "unicast") == "unicast" and not probe.get("client")

    # ---- evidence: IKE --------------------------------------------------------------------------

    def _ike_failed(self, probe: dict, since: float) -> str | None:
        src, dst = probe["src"], probe["dst"]
        src_addr, dst_addr = probe["src_address"], self.aliases.get(probe["dst_address"], probe["dst_address"])
        found = None
        for host, peer in ((src, dst_addr), (dst, src_addr)):
            tail = self.tails.get(host)
            if tail:
                msg = tail.failed_with(peer, since) or tail.failed_with(self._alias(peer), since)
                if msg:
                    found = f"IKE failed: {host}: {msg}"
                    break
        if not found or self._negotiating(src, dst_addr) or self._negotiating(dst, src_addr):
            return None
        return found

    def _alias(self, address: str) -> str:
        return (self.plan.get("nat_aliases") or {}).get(address, address)

    def _negotiating(self, host: str, peer: str) -> bool:
        """Is an IKE_SA of `host` with `peer` still being set up (it may yet succeed)?"""
        c = self.charons.get(host)
        if c is None:
            return False
        try:
            if host not in self.sessions:
                self.sessions[host] = vici.Session(c._sock())
            entries = [decode(e) for e in self.sessions[host].list_sas()]
        except Exception:  # noqa: BLE001  no answer: assume it may still succeed
            return True
        peers = {peer, self._alias(peer)}
        return any(ike.get("remote-host") in peers and ike.get("state") not in ("ESTABLISHED", "DELETING")
                   for e in entries for ike in e.values())

    # ---- evidence: a firewall drops every carrier ------------------------------------------------

    def _blocking_filters(self, probe: dict) -> list[tuple[str, dict]] | None:
        """The drop filters that take each carrier of this flow at a firewall on its path, or
        None when some carrier would pass every firewall."""
        src, dst = probe["src_address"], self.aliases.get(probe["dst_address"], probe["dst_address"])
        proto = PROTO.get(probe["protocol"])
        carriers = [(proto, None, probe["port"])]
        if self.hosts[probe["src"]].get("charon"):  # without IPsec its packets leave in clear
            carriers += [(50, None, None), (51, None, None), (17, 4500, 4500)]
        for h in self.plan["hosts"]:
            fw = h.get("firewall") or {}
            if not fw.get("filters"):
                continue
            came = self._iface(h, src)
            went = self._iface(h, dst)
            if not came or not went or came is went:
                continue
            filters = sorted((f for f in fw["filters"] if f["dev"] == came["ifname"] and f["hook"] == "ingress"
                              and f["kind"] != "nat"), key=lambda f: f["pref"])
            taken = []
            for p, sport, dport in carriers:
                first = next((f for f in filters if matches(f["match"], src, dst, p, sport, dport)), None)
                if first is None or first["action"] != "drop":
                    break
                taken.append((h["name"], first))
            else:
                return taken
        return None

    def _iface(self, host: dict, address: str) -> dict | None:
        for i in host["interfaces"]:
            if ipaddress.ip_address(address) in self.subnets[i["network"]]:
                return i
        return None

    def _counters(self) -> dict[str, dict]:
        out = {}
        for h in self.plan["hosts"]:
            if h.get("firewall"):
                try:
                    out[h["name"]] = {(c["dev"], c["pref"]): c["packets"]
                                      for c in firewall.counters(h["ns"], h["firewall"]) if c["hook"] == "ingress"}
                except RuntimeError:
                    out[h["name"]] = {}
        return out

    def _firewall_dropped(self, probe: dict, counters: dict, base: dict) -> str | None:
        taken = self._blocking_filters(probe)
        if not taken:
            return None
        rose = [(fw, f) for fw, f in taken
                if counters.get(fw, {}).get((f["dev"], f["pref"]), 0) > base.get(fw, {}).get((f["dev"], f["pref"]), 0)]
        if not rose:
            return None
        fw, f = rose[0]
        return f"firewall {fw} drops every carrier of this flow; its filter '{f['label']}' counted packets"

    # ---- the watcher ----------------------------------------------------------------------------------

    def start(self, probes: list[dict], deadlines: dict[str, Deadline]) -> None:
        watched = [p for p in probes if p["id"] in deadlines and self._watchable(p)]
        if not watched:
            return
        needs_counters = any(self._blocking_filters(p) for p in watched)
        base = self._counters() if needs_counters else {}
        for tail in self.tails.values():  # what was logged before the probes is not evidence
            tail.read()
        self._thread = threading.Thread(target=self._run, args=(watched, deadlines, base, needs_counters),
                                        name="finality", daemon=True)
        self._thread.start()

    def _run(self, watched: list[dict], deadlines: dict[str, Deadline], base: dict, needs_counters: bool) -> None:
        started = time.time() - 0.001
        final_at: dict[str, tuple[float, str]] = {}
        while not self._stop.wait(POLL):
            pending = [p for p in watched if not deadlines[p["id"]].finished and not deadlines[p["id"]].reason]
            if not pending:
                return
            for tail in self.tails.values():
                tail.read()
            counters = self._counters() if needs_counters and any(p["id"] not in final_at for p in pending) else {}
            now = time.time()
            for p in pending:
                if p["id"] not in final_at:
                    why = self._ike_failed(p, started) or (self._firewall_dropped(p, counters, base) if counters else None)
                    if why:
                        final_at[p["id"]] = (now, why)
                if p["id"] in final_at and now - final_at[p["id"]][0] >= GRACE:
                    deadlines[p["id"]].give_up(final_at[p["id"]][1])
                    self.given_up.append({"probe": p["id"], "reason": final_at[p["id"]][1],
                                          "final_after": round(final_at[p["id"]][0] - started, 3),
                                          "given_up_after": round(now - started, 3)})

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
