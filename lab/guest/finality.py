"""Stop waiting for a probe once the evidence that it cannot be delivered is final.

Runs inside the lab kernel, one thread beside the probes. A probe that gets no answer waits
out its 10 s timeout; most of that time is spent after the outcome was already decided. A
flow reaches its destination either in clear or protected, so this watcher tells a waiting
probe to give up only when both ways are shut, for reasons that cannot change during the run,
and something was seen to happen (silence alone never ends a wait):

In clear, it is shut when
- a firewall on the path drops the flow's own packets (its first matching filter is a drop);
- the sender's kernel holds them: its XFRM policy for the flow requires a template, so
  nothing of it ever leaves unprotected (`ip xfrm policy list`, decided as the kernel does);
  seen when the kernel asked charon for an SA for this flow (charon logs the acquire), or on
  the very policy that holds it (the same reqid: the kernel asks once per policy while its SA
  is negotiated, so the other flows one trap holds get no acquire of their own); decided with
  the probe's own source port once its socket is bound;
- the receiver's kernel holds the answer the same way (the request arrives in clear, the
  reply never leaves), seen by the receiver's acquire for the answer;
- the receiver's kernel refuses them in clear (its inbound policy requires a template) and
  its XFRM counters of refused packets rose (XfrmInTmplMismatch, XfrmInPolBlock).
Protected, it is shut when
- the sender or the receiver runs no IPsec at all (and no tunnel in the design could carry
  the flow for it);
- the sender's kernel sends it in clear and no rule of either host that initiates (a trap)
  has traffic selectors that could include it: every SA between them is negotiated within an
  initiator's selectors, so none can ever carry it (the firewall's drop of the clear packets
  is then what is seen);
- IKE between the two definitively failed, logged after the probe started: a notify error
  the initiator received, the responder's own reason, the kernel refusing the negotiated SA,
  or a host lacking its own key (it can never authenticate); and nothing between the two
  still negotiates (an IKE_SA being set up, or a CHILD_SA being created on an established one);
- a firewall on the path drops every carrier (ESP, AH, ESP in UDP 4500) and counted packets;
- a firewall on the path drops IKE (UDP 500, either way: no IKE_SA can then be set up), no
  IKE_SA between the two is established, and that filter counted packets.

The give-up comes GRACE seconds after the evidence became final, and only if it is still final
then. Nothing is cut short where a host falls back to clear after IKE silence (Windows' soft
SA: that 3 s wait is the behaviour under test; a flow none of its request rules covers is
watched), for a cluster's VIP, or behind NAT where the
addresses a host sees are not the probe's. The host still judges every flow from the
captures; this only decides when to stop listening.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import threading
import time

import vici

from lab.fwmatch import matches
from lab.guest import firewall, xfrm, xfrmpolicy
from lab.guest.charon import decode
from lab.guest.netns import ip
from lab.guest.traffic import Deadline

GRACE = 1.0  # seconds from final evidence to giving up: packets still in flight may land
POLL = 0.25
PROTO = {"tcp": 6, "udp": 17, "icmp": 1}
IPSEC_CARRIERS = [(50, None, None), (51, None, None), (17, 4500, 4500)]
REFUSED_COUNTERS = ("XfrmInTmplMismatch", "XfrmInPolBlock")

# In the initiator's log: the responder said no.
_TOLD = re.compile(r"received (NO_PROPOSAL_CHOSEN|AUTHENTICATION_FAILED|TS_UNACCEPTABLE|"
                   r"FAILED_CP_REQUIRED|NO_ADDITIONAL_SAS) (?:error )?notify")
# In the responder's log: its own reason for refusing.
_REFUSED = re.compile(r"no acceptable proposal found|certificate was revoked|no trusted \w+ public key found|"
                      r"no matching peer config found|MAC mismatched|no acceptable traffic selectors found|"
                      r"constraint check failed|certificate status is not available|"
                      r"unable to add SAD entry")
# In a host's own log: it has no key of its own to authenticate with; the lab loads none later.
_NO_KEY = re.compile(r"no private key found for|no shared key found for")
_TAG = re.compile(r"\[\w+\] <([^>]+)> (.*)$")
# The kernel held a packet and asked for an SA: its addresses, protocol and ports.
_ACQUIRE = re.compile(r"creating acquire job for policy (\d+\.\d+\.\d+\.\d+)/\d+(?:\[([^\]]*)\])? === "
                      r"(\d+\.\d+\.\d+\.\d+)/\d+(?:\[([^\]]*)\])?(?: with reqid \{(\d+)\})?")
_ADDR = re.compile(r"(?:to|from) (\d+\.\d+\.\d+\.\d+)")
_CHILD_TASKS = {"CHILD_CREATE", "QUICK_MODE"}


def ts_may_cover(ts: str, address: str, proto: int, port: int | None) -> bool:
    """Could a strongSwan traffic selector (`10.10.2.20/32[tcp/http]`, `dynamic`, `0.0.0.0/0`,
    `[udp/1024-65535]`) include this end of a flow? What cannot be read counts as covering: an
    over-estimate only ever makes the watcher wait."""
    net, _, rest = ts.partition("[")
    try:
        if net and address and ipaddress.ip_address(address) not in ipaddress.ip_network(net, strict=False):
            return False
    except ValueError:
        pass  # dynamic, %any, a range: may be anything
    name, _, ports = rest.rstrip("]").partition("/")
    if name and name not in ("%any", "any", "0"):
        try:
            number = int(name) if name.isdigit() else socket.getprotobyname(name)
        except OSError:
            return True
        if number != proto:
            return False
    if ports and port is not None and ports not in ("%any", "any", "0"):
        lo, _, hi = ports.partition("-")
        try:
            lo_n = int(lo) if lo.isdigit() else socket.getservbyname(lo)
            hi_n = int(hi) if hi.isdigit() else (socket.getservbyname(hi) if hi else lo_n)
        except OSError:
            return True
        return lo_n <= port <= hi_n
    return True


def _port_of(selector: str, proto: str, port: int | None) -> bool:
    """Does an acquire's `tcp/50917` or `tcp/http` name this protocol (and port, when known)?"""
    name, _, text = selector.partition("/")
    if name != proto:
        return False
    if port is None:
        return True
    try:
        return (int(text) if text.isdigit() else socket.getservbyname(text, proto)) == port
    except OSError:
        return False  # unreadable: not taken as seen


class LogTail:
    """New lines of one charon log, with the failures in them by peer and wall-clock time."""

    def __init__(self, path: str):
        self.path, self.pos = path, 0
        self.peer_of: dict[str, str] = {}
        self.failures: list[tuple[float, str, str, bool]] = []  # (time read, peer, line, no key of its own)
        self.acquires: list[tuple[float, str, str, str, str, int | None]] = []  # (time read, src, dst, [src], [dst], reqid)

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
            acq = _ACQUIRE.search(line)
            if acq:
                reqid = int(acq.group(5)) if acq.group(5) else None
                self.acquires.append((now, acq.group(1), acq.group(3), acq.group(2) or "", acq.group(4) or "", reqid))
                continue
            m = _TAG.search(line)
            if not m:
                continue
            tag, msg = m.group(1).rpartition("|")[2], m.group(2)
            addr = _ADDR.search(msg)
            if addr and tag not in self.peer_of:
                self.peer_of[tag] = addr.group(1)
            if tag not in self.peer_of:
                continue
            if _TOLD.search(msg) or _REFUSED.search(msg):
                self.failures.append((now, self.peer_of[tag], msg.strip(), False))
            elif _NO_KEY.search(msg):
                self.failures.append((now, self.peer_of[tag], msg.strip(), True))

    def acquired(self, src: str, dst: str, proto: str, sport: int | None, dport: int | None, since: float) -> bool:
        """Did the kernel ask for an SA for a packet src -> dst of this protocol and ports?"""
        return any(t >= since and s == src and d == dst and _port_of(ss, proto, sport) and _port_of(ds, proto, dport)
                   for t, s, d, ss, ds, _ in self.acquires)

    def acquired_for(self, reqids: set[int], since: float) -> bool:
        """Did the kernel ask for an SA on a policy with one of these reqids? It asks once per
        policy while that SA is negotiated: the other flows the policy holds get no line."""
        return any(t >= since and r in reqids for t, _, _, _, _, r in self.acquires)

    def any_acquire(self, since: float) -> bool:
        return any(t >= since for t, *_ in self.acquires)

    def failed_with(self, peer: str, since: float, no_key: bool | None = None) -> str | None:
        return next((msg for t, p, msg, k in self.failures
                     if p == peer and t >= since and (no_key is None or k == no_key)), None)


def _busy(ike: dict) -> bool:
    """Is this IKE_SA still being set up, or creating a CHILD_SA (it may yet succeed)?"""
    if ike.get("state") not in ("ESTABLISHED", "DELETING"):
        return True
    tasks = set(ike.get("tasks-active") or []) | set(ike.get("tasks-queued") or []) | set(ike.get("tasks-passive") or [])
    children = (ike.get("child-sas") or {}).values()
    return bool(tasks & _CHILD_TASKS) or any(c.get("state") in ("CREATED", "INSTALLING") for c in children)


class Finality:
    def __init__(self, plan: dict, charons: dict):
        self.plan, self.charons = plan, charons
        self.hosts = {h["name"]: h for h in plan.hosts}
        self.aliases = {v: k for k, v in plan.nat_aliases.items()}  # outside -> inside
        self.subnets = {n["name"]: ipaddress.ip_network(n["subnet"]) for n in plan.networks}
        self.tails = {name: LogTail(c.log_path) for name, c in charons.items() if hasattr(c, "log_path")}
        self.deadlines: dict[str, Deadline] = {}  # the watched probes' (start): their source ports
        self.sessions: dict[str, vici.Session] = {}
        self.tunnels = any(ch.get("mode") == "tunnel" for h in plan.hosts
                           for conn in ((h.get("charon") or {}).get("conns") or {}).values()
                           for ch in (conn.get("children") or {}).values())
        self.policies: dict[str, list[dict] | None] = {}  # host -> its kernel's XFRM policies, read once
        self._statics: dict[str, dict] = {}
        self.given_up: list[dict] = []  # what the run records: probe, reason, when
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- which probes may be cut short at all ------------------------------------------------

    def _watchable(self, probe: dict) -> bool:
        if probe.get("cluster") or probe["dst"] not in self.hosts:
            return False  # to a cluster's VIP: whichever node holds it answers; not judged early
        for name in (probe["src"], probe["dst"]):
            fallback = (self.hosts[name].get("charon") or {}).get("fallback")
            if fallback and self._soft_sa_may_cover(probe, name, fallback):
                return False  # a soft SA may still come: Windows timing is under test
        # A real client's flow is the probe's own (addresses, protocol, service port).
        return probe.get("via", "unicast") == "unicast" and not probe.get("proxied")

    def _soft_sa_may_cover(self, probe: dict, host: str, fallback: dict) -> bool:
        """May one of this host's soft SAs (a pass shunt per request rule, lab.guest.softsa)
        let this flow, or its answer, through in clear? A flow no request rule covers (a
        Require rule of the same host) is blocked or not whatever the fallback does."""
        src, dst = self._addresses(probe)
        proto = PROTO.get(probe["protocol"], -1)
        mine, theirs, my_port, their_port = ((src, dst, None, probe["port"]) if host == probe["src"]
                                             else (dst, src, probe["port"], None))
        return any(any(ts_may_cover(t, mine, proto, my_port) for t in c.get("local_ts") or [""])
                   and any(ts_may_cover(f"{prefix}{c.get('remote_suffix', '')}", theirs, proto, their_port)
                           for prefix in c.get("remote_prefixes") or ["0.0.0.0/0"])
                   for hint in fallback.values() for c in hint.get("children") or [])

    def _natted(self, probe: dict) -> bool:
        nat = self.plan.nat_aliases
        return any(a in nat or a in self.aliases for a in (probe["src_address"], probe["dst_address"]))

    # ---- static facts: firewalls on the path ---------------------------------------------------

    def _first_drops(self, src: str, dst: str, carriers: list[tuple]) -> list[tuple[str, dict]] | None:
        """At some firewall on the path from src to dst, the drop filter that first takes each
        of these packets; None when at every firewall some packet meets no drop first."""
        for h in self.plan.hosts:
            fw = h.get("firewall") or {}
            if not fw.get("filters"):
                continue
            came, went = self._iface(h, src), self._iface(h, dst)
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

    def _addresses(self, probe: dict) -> tuple[str, str]:
        return probe["src_address"], self.aliases.get(probe["dst_address"], probe["dst_address"])

    def _blocking_filters(self, probe: dict) -> list[tuple[str, dict]] | None:
        """The drop filters that take each carrier of this flow, its own packets and (when the
        sender runs IPsec) ESP, AH and UDP 4500, at one firewall on its path; else None."""
        carriers = [(PROTO.get(probe["protocol"]), None, probe["port"])]
        if self.hosts[probe["src"]].get("charon"):  # without IPsec its packets leave in clear
            carriers += IPSEC_CARRIERS
        return self._first_drops(*self._addresses(probe), carriers)

    def _ike_blocked(self, probe: dict) -> list[tuple[str, dict]] | None:
        """A firewall filter that drops IKE's UDP 500 between the two, in either direction."""
        if self.tunnels or self._natted(probe):
            return None  # the IKE that matters may be with a gateway, or on translated addresses
        src, dst = self._addresses(probe)
        return self._first_drops(src, dst, [(17, 500, 500)]) or self._first_drops(dst, src, [(17, 500, 500)])

    def _iface(self, host: dict, address: str) -> dict | None:
        for i in host["interfaces"]:
            if ipaddress.ip_address(address) in self.subnets[i["network"]]:
                return i
        return None

    def _static(self, probe: dict) -> dict:
        """The firewall filters that matter to this probe, worked out once."""
        if probe["id"] not in self._statics:
            own = [(PROTO.get(probe["protocol"]), None, probe["port"])]
            self._statics[probe["id"]] = {"clear": self._first_drops(*self._addresses(probe), own),
                                          "carriers": self._blocking_filters(probe),
                                          "ike": self._ike_blocked(probe)}
        return self._statics[probe["id"]]

    # ---- static facts: the kernels' XFRM policies ---------------------------------------------

    def _policies(self, host: str) -> list[dict] | None:
        """The host's XFRM policies, listed once when first needed (a process in the guest costs
        0.1 s). Only charon and the lab's relaxing of inbound templates install any, both before
        the probes; a CHILD_SA adds policies with templates, which never let clear through."""
        if host not in self.policies:
            if not self.hosts[host].get("charon"):
                self.policies[host] = []  # no IPsec: the lab installs no policy there
            else:
                res = subprocess.run(ip(self.hosts[host]["ns"], "xfrm", "policy", "list"),
                                     capture_output=True, text=True)
                self.policies[host] = xfrmpolicy.parse(res.stdout) if res.returncode == 0 else None
        return self.policies[host]

    def _sport(self, probe: dict) -> int | None:
        """The probe's source port once its socket is bound (a real client's is not known).
        Decided with it, a policy that selects on source ports (a Kerberos exemption's
        `sport 88`) no longer leaves the kernel's choice unknown."""
        deadline = self.deadlines.get(probe["id"])
        return deadline.sport if deadline and probe.get("protocol") in ("tcp", "udp") else None

    def _decide(self, host: str, direction: str, probe: dict) -> str:
        return self._choose(host, direction, probe)[0]

    def _choose(self, host: str, direction: str, probe: dict, answer: bool = False) -> tuple[str, dict | None]:
        """The kernel's choice on `host` for the probe's packets, or with `answer` for its
        answer (from the service port back to the sender)."""
        pols = self._policies(host)
        if pols is None:
            return xfrmpolicy.UNKNOWN, None
        src, dst = self._addresses(probe)
        sport, dport = self._sport(probe), probe["port"]
        if answer:
            src, dst, sport, dport = dst, src, dport, sport
        return xfrmpolicy.choose(pols, direction, src, dst, PROTO.get(probe["protocol"], -1), sport, dport)

    # ---- evidence: charon's logs and SA lists ---------------------------------------------------

    def _ikes(self, host: str, peer: str) -> list[dict] | None:
        """The IKE_SAs of `host` with `peer` (list-sas); None when the daemon does not answer."""
        c = self.charons.get(host)
        if c is None:
            return []
        try:
            if host not in self.sessions:
                self.sessions[host] = vici.Session(c._sock())
            entries = [decode(e) for e in self.sessions[host].list_sas()]
        except Exception:  # noqa: BLE001  no answer: assume it may still succeed
            return None
        peers = {peer, self._alias(peer)}
        return [ike for e in entries for ike in e.values() if ike.get("remote-host") in peers]

    def _negotiating(self, host: str, peer: str) -> bool:
        ikes = self._ikes(host, peer)
        return ikes is None or any(_busy(ike) for ike in ikes)

    def _established(self, host: str, peer: str) -> bool:
        ikes = self._ikes(host, peer)
        return ikes is None or any(ike.get("state") == "ESTABLISHED" for ike in ikes)

    def _alias(self, address: str) -> str:
        return self.plan.nat_aliases.get(address, address)

    def _ends(self, probe: dict) -> tuple[tuple[str, str], tuple[str, str]]:
        """Each host of the pair with the address it knows the other by."""
        src, dst = self._addresses(probe)
        return (probe["src"], dst), (probe["dst"], src)

    def _logged(self, probe: dict, since: float) -> bool:
        return any(tail.failed_with(peer, since) or tail.failed_with(self._alias(peer), since)
                   for host, peer in self._ends(probe) if (tail := self.tails.get(host)))

    def _initiated_cover(self, probe: dict) -> bool:
        """May any SA between the two carry this flow? Only a rule that initiates (a trap) on
        either host starts one, and its SA never reaches past that rule's selectors."""
        src, dst = self._addresses(probe)
        proto = PROTO.get(probe["protocol"], -1)
        for host, mine, theirs, my_port, their_port in ((probe["src"], src, dst, None, probe["port"]),
                                                        (probe["dst"], dst, src, probe["port"], None)):
            conns = ((self.hosts[host].get("charon") or {}).get("conns") or {}).values()
            for conn in conns:
                for child in (conn.get("children") or {}).values():
                    if child.get("start_action") != "trap" or child.get("mode") in ("pass", "drop"):
                        continue
                    if any(ts_may_cover(lt, mine, proto, my_port) for lt in child.get("local_ts") or [""]) and \
                            any(ts_may_cover(rt, theirs, proto, their_port) for rt in child.get("remote_ts") or [""]):
                        return True
        return False

    def _ike_failed(self, probe: dict, since: float) -> str | None:
        ends = self._ends(probe)
        for host, peer in ends:  # a host without a key of its own: no IKE_SA with it can complete
            tail = self.tails.get(host)
            msg = tail and (tail.failed_with(peer, since, True) or tail.failed_with(self._alias(peer), since, True))
            if msg and not any(self._established(h, p) for h, p in ends):
                return f"IKE failed: {host}: {msg}"
        found = None
        for host, peer in ends:
            tail = self.tails.get(host)
            if tail:
                msg = tail.failed_with(peer, since, False) or tail.failed_with(self._alias(peer), since, False)
                if msg:
                    found = f"IKE failed: {host}: {msg}"
                    break
        if not found or any(self._negotiating(h, p) for h, p in ends):
            return None
        return found

    # ---- the two ways a flow may arrive ------------------------------------------------------

    def _acquired(self, host: str, src: str, dst: str, probe: dict, sport, dport, since: float) -> bool:
        tail = self.tails.get(host)
        return bool(tail) and tail.acquired(src, dst, probe["protocol"], sport, dport, since)

    def _acquired_for(self, host: str, policy: dict | None, since: float) -> bool:
        """The kernel asked for an SA on the very policy that holds the flow (by its reqid)."""
        tail = self.tails.get(host)
        reqids = {t["reqid"] for t in (policy or {}).get("templates", []) if t.get("reqid")}
        return bool(tail) and bool(reqids) and tail.acquired_for(reqids, since)

    def _clear_shut(self, probe: dict, rose, refused_rose, since: float = 0.0) -> tuple[str, bool] | None:
        """Why its own packets cannot arrive in clear, and whether that was seen happening."""
        taken = self._static(probe)["clear"]
        if taken:
            fw, f = taken[0]
            return f"firewall {fw} drops it in clear (filter '{f['label']}')", rose(taken)
        src, dst = self._addresses(probe)
        outcome, policy = self._choose(probe["src"], "out", probe)
        if outcome == xfrmpolicy.HELD:
            return (f"{probe['src']}'s kernel sends it only protected",
                    self._acquired(probe["src"], src, dst, probe, None, probe["port"], since)
                    or self._acquired_for(probe["src"], policy, since))
        if self._natted(probe):
            return None
        if self._decide(probe["dst"], "in", probe) == xfrmpolicy.REFUSED:
            return f"{probe['dst']}'s kernel refuses it in clear", refused_rose(probe["dst"])
        if self._choose(probe["dst"], "out", probe, answer=True)[0] == xfrmpolicy.HELD:
            return (f"{probe['dst']}'s kernel sends the answer only protected",
                    self._acquired(probe["dst"], dst, src, probe, probe["port"], None, since))
        return None

    def _protected_shut(self, probe: dict, since: float, rose) -> tuple[str, bool] | None:
        """Why it cannot arrive protected, and whether that was seen happening."""
        if not self.tunnels:
            for name in (probe["src"], probe["dst"]):
                if not self.hosts[name].get("charon"):
                    return f"{name} runs no IPsec", False
            if not self._natted(probe) and self._decide(probe["src"], "out", probe) == xfrmpolicy.CLEAR \
                    and not self._initiated_cover(probe):
                return f"no rule of {probe['src']} or {probe['dst']} would start an SA for it", False
        failed = self._ike_failed(probe, since)
        if failed:
            return failed, True
        carriers = self._static(probe)["carriers"]
        if carriers:
            fw, f = carriers[-1]
            return f"firewall {fw} drops every carrier of this flow; its filter '{f['label']}' counted packets", rose(carriers)
        ike = self._static(probe)["ike"]
        if ike and rose(ike) and not any(self._established(h, p) for h, p in self._ends(probe)):
            fw, f = ike[0]
            return f"firewall {fw} drops IKE (UDP 500) between them; its filter '{f['label']}' counted packets", True
        return None

    def final(self, probe: dict, since: float, counters: dict, base: dict, xfrm_now: dict, xfrm_base: dict) -> str | None:
        """The reason this probe cannot be delivered, once final; else None."""
        def rose(taken):
            return any(counters.get(fw, {}).get((f["dev"], f["pref"]), 0) > base.get(fw, {}).get((f["dev"], f["pref"]), 0)
                       for fw, f in taken)

        def refused_rose(host):
            now, was = xfrm_now.get(host) or {}, xfrm_base.get(host) or {}
            return any(now.get(k, 0) > was.get(k, 0) for k in REFUSED_COUNTERS)

        st = self._static(probe)
        src, dst = self._addresses(probe)
        seen = (self._logged(probe, since) or rose(st["clear"] or []) or rose(st["carriers"] or [])
                or rose(st["ike"] or []) or refused_rose(probe["dst"])
                or (probe["src"] in self.tails and self.tails[probe["src"]].any_acquire(since))
                or self._acquired(probe["dst"], dst, src, probe, probe["port"], None, since))
        if not seen:
            return None  # silence: nothing else is looked at (a policy listing costs a process)
        clear = self._clear_shut(probe, rose, refused_rose, since)
        if not clear:
            return None
        protected = self._protected_shut(probe, since, rose)
        if not protected or not (clear[1] or protected[1]):
            return None  # a way is open, or nothing was seen: silence waits
        if protected[0].startswith("firewall") and clear[0].startswith("firewall"):
            return protected[0]
        return f"{protected[0]}; {clear[0]}"

    # ---- counters read while the probes wait -------------------------------------------------

    def _counters(self) -> dict[str, dict]:
        out = {}
        for h in self.plan.hosts:
            if h.get("firewall"):
                try:
                    out[h["name"]] = {(c["dev"], c["pref"]): c["packets"]
                                      for c in firewall.counters(h["ns"], h["firewall"]) if c["hook"] == "ingress"}
                except RuntimeError:
                    out[h["name"]] = {}
        return out

    def _xfrm_stats(self, hosts: set[str]) -> dict[str, dict]:
        out = {}
        for name in hosts:
            try:
                out[name] = xfrm.stats(self.hosts[name]["ns"])
            except OSError:
                out[name] = {}
        return out

    def _refusers(self, watched: list[dict]) -> set[str]:
        """Receivers whose refused-packet counters may be evidence: IPsec hosts, sent to by hosts
        without IPsec."""
        return {p["dst"] for p in watched if self.hosts[p["dst"]].get("charon")
                and not self.hosts[p["src"]].get("charon") and not self._natted(p)}

    # ---- the watcher ----------------------------------------------------------------------------------

    def start(self, probes: list[dict], deadlines: dict[str, Deadline]) -> None:
        self.deadlines = deadlines
        watched = [p for p in probes if p["id"] in deadlines and self._watchable(p)]
        if not watched:
            return
        needs_counters = any(any(self._static(p).values()) for p in watched)
        refusers = self._refusers(watched)
        base = self._counters() if needs_counters else {}
        xfrm_base = self._xfrm_stats(refusers)
        for tail in self.tails.values():  # what was logged before the probes is not evidence
            tail.read()
        self._thread = threading.Thread(target=self._run, args=(watched, deadlines, base, needs_counters,
                                                                refusers, xfrm_base),
                                        name="finality", daemon=True)
        self._thread.start()

    def _run(self, watched, deadlines, base, needs_counters, refusers, xfrm_base) -> None:
        started = time.time() - 0.001
        final_at: dict[str, tuple[float, str]] = {}
        while not self._stop.wait(self._next_wait(final_at)):
            pending = [p for p in watched if not deadlines[p["id"]].finished and not deadlines[p["id"]].reason]
            if not pending:
                return
            # Only the logs of hosts still waiting on a probe: a hostfs read per log and poll
            # cost the guest's CPU, with 40 hosts, more than the probes did.
            for name in {h for p in pending for h in (p["src"], p["dst"])}:
                if name in self.tails:
                    self.tails[name].read()
            counters = self._counters() if needs_counters else {}
            xfrm_now = self._xfrm_stats(refusers & {p["dst"] for p in pending})
            now = time.time()
            for p in pending:
                why = self.final(p, started, counters, base, xfrm_now, xfrm_base)
                if not why:
                    final_at.pop(p["id"], None)  # not final (any more): the grace starts again
                    continue
                first = final_at.setdefault(p["id"], (now, why))[0]
                if now - first >= GRACE:
                    deadlines[p["id"]].give_up(why)
                    self.given_up.append({"probe": p["id"], "reason": why,
                                          "final_after": round(first - started, 3),
                                          "given_up_after": round(now - started, 3)})

    @staticmethod
    def _next_wait(final_at: dict[str, tuple[float, str]]) -> float:
        """POLL, or less when a grace ends sooner: the give-up is checked when it is due, not up
        to a poll later."""
        due = [first + GRACE - time.time() for first, _ in final_at.values()]
        return max(0.0, min([POLL] + [d + 0.005 for d in due]))

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
