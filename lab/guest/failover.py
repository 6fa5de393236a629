"""A back-end cluster loses its virtual IP to the other node while a client keeps asking.

Runs inside the lab kernel. A steady stream of requests (each its own short connection with
a marker, so the listeners' logs say which node answered) goes to the VIP; after a warm-up the
VIP moves:
- planned: the owner's charon deletes its SAs (telling the peer), the VIP leaves it, the other
  node takes it and announces it with gratuitous ARP, as the cluster service does;
- crash: the owner's charon is killed (no DELETE) and its link goes down; the other node takes
  the VIP. The client still holds an SA to the VIP until its timers give the old peer up.
Before the move the lab waits for a steady state: a CHILD_SA between the client and the VIP is
established and the last requests sent since then were all answered (a fixed warm-up moved the
VIP while the first negotiation was still running on a busy machine, and the scenario then
measured nothing). If that never happens the VIP is not moved and the result says why.
The stream runs until requests succeed again (plus a short tail) or the deadline passes.
"""

from __future__ import annotations

import secrets
import signal
import socket
import struct
import subprocess
import threading
import time

from lab.guest import rtnl
from lab.guest.netns import inside, ip, run_in
from lab.guest.traffic import REPLY

REQUEST_TIMEOUT = 1.0
TAIL = 2.0  # seconds of successful requests recorded after recovery
STEADY_REQUESTS = 5  # consecutive answered requests, all sent after the SA came up
STEADY_TIMEOUT = 30.0  # the first negotiation may cost seconds on a loaded machine; not 30
# A planned move waits this long for each peer to confirm the DELETE, then moves on (the DELETE
# is sent either way). Not longer: once the owner has deleted its SA but still holds the VIP,
# its in-flight answers leave in clear (seen with a 3 s wait when a DELETE took 1.1 s).
DELETE_WAIT_MS = 500
OFFLINE_PRIORITY = 0xFFFFFF00  # below every policy charon installs


class RequestStream:
    def __init__(self, scenario: dict):
        self.s = scenario
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)
        self._nonce = secrets.token_hex(3)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        time.sleep(REQUEST_TIMEOUT + 0.2)  # let the last requests finish

    def answered_since(self, t: float) -> int:
        """How many requests in a row, sent after `t`, were answered, counting back from the
        newest finished one."""
        with self._lock:
            done = sorted((r for r in self.requests if r["t_send"] > t), key=lambda r: r["n"])
        run = 0
        for r in reversed(done):
            if not r["ok"]:
                break
            run += 1
        return run

    def last_ok_after(self, t: float) -> float | None:
        with self._lock:
            oks = [r["t_done"] for r in self.requests if r["ok"] and r["t_send"] > t]
        return min(oks) if oks else None

    def _run(self) -> None:
        interval = 1.0 / self.s["rate"]
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            n += 1
            threading.Thread(target=self._one, args=(n,), daemon=True).start()
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _one(self, n: int) -> None:
        marker = f"LABPROBE-f{n}-{self._nonce}"
        rec = {"n": n, "marker": marker, "t_send": time.time(), "t_done": None, "ok": False, "error": None,
               "sport": None}
        kind = socket.SOCK_STREAM if self.s["protocol"] == "tcp" else socket.SOCK_DGRAM
        with inside(self.s["src_ns"]):
            sock = socket.socket(socket.AF_INET, kind)
        try:
            sock.settimeout(REQUEST_TIMEOUT)
            sock.bind((self.s["src_address"], 0))
            rec["sport"] = sock.getsockname()[1]
            dst = (self.s["vip"], self.s["port"])
            payload = f"GET /{marker} HTTP/1.0\r\n\r\n".encode()
            if kind == socket.SOCK_STREAM:
                sock.connect(dst)
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                answer = sock.recv(4096)
            else:
                sock.sendto(payload, dst)
                answer, _ = sock.recvfrom(4096)
            rec["ok"] = answer.startswith(REPLY + marker.encode())
        except OSError as exc:
            rec["error"] = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        finally:
            sock.close()
            rec["t_done"] = time.time()
            with self._lock:
                self.requests.append(rec)


def _ip(ns: str, *args: str) -> None:
    res = subprocess.run(ip(ns, *args), capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ip -n {ns} {' '.join(args)}: {res.stderr.strip()}")


# The move's own steps on the critical path go over netlink and a packet socket from this
# thread, not through processes: under load (8-9 on two cores) the `ip addr` and `arping`
# processes between the DELETE and the VIP answering on the other node took 3.2 s of a
# planned move's 8.7 s outage, the lab's slowness measured as the cluster's.
def _address(node: dict, vip_cidr: str, request, doing: str) -> None:
    rtnl.apply(node["ns"], lambda index: [request(vip_cidr, node["ifname"], index(node["ifname"]))], inside, doing)


def gratuitous_arp(mac: bytes, vip: str) -> bytes:
    """An unsolicited ARP request for the VIP from this MAC (what `arping -U` sends): every
    neighbour holding an entry for the VIP repoints it here."""
    addr = socket.inet_aton(vip)
    return (b"\xff" * 6 + mac + struct.pack("!H", 0x0806) + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
            + mac + addr + b"\0" * 6 + addr)


def _announce(node: dict, vip: str, count: int = 2, gap: float = 0.2) -> None:
    with inside(node["ns"]):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    with s:
        s.bind((node["ifname"], 0x0806))  # the interface of the socket's own namespace
        frame = gratuitous_arp(s.getsockname()[4], vip)
        for i in range(count):
            if i:
                time.sleep(gap)
            s.send(frame)


def _take_vip(node: dict, vip_cidr: str, vip: str) -> None:
    _address(node, vip_cidr, rtnl.add_address, f"{node['host']} taking the VIP")
    # Gratuitous ARP, as the cluster service sends: neighbours repoint the VIP to this node.
    _announce(node, vip)


# IKE header byte 18 is the exchange type: 34 IKE_SA_INIT, 2 Main Mode, 4 Aggressive Mode.
# Offset in bits from the UDP header: (8 + 18) * 8 = 208. The rule sits on the node's port of
# the network's bridge (nftables' bridge family: Debian's UML kernel has no IPv4 family).
NO_NEW_IKE = """table bridge lab_failover {{
  chain forward {{
    type filter hook forward priority 0; policy accept;
    oifname "{port}" ip daddr {vip} udp dport 500 @th,208,8 {{ 2, 4, 34 }} counter drop
  }}
}}
"""


def _refuse_new_ike(switch_ns: str, node: dict, vip: str) -> None:
    """The VIP resource goes offline on this node: no new IKE SA may start here any more."""
    res = subprocess.run(run_in(switch_ns, "nft", "-f", "-"),
                         input=NO_NEW_IKE.format(vip=vip, port=node["port"]), capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"nft on {node['host']}: {res.stderr.strip()}")


def move_vip(scenario: dict, owner_charon) -> dict:
    """Carry out the planned move or the crash. Returns what was done and when."""
    src, dst = scenario["from"], scenario["to"]
    steps = []
    t0 = time.time()
    if scenario["mode"] == "planned":
        # First stop taking new IKE SAs on the VIP, or the peer's immediate renegotiation after
        # the DELETE lands on this node again a moment before the VIP leaves it.
        _refuse_new_ike(scenario["switch_ns"], src, scenario["vip"])
        steps.append(f"{src['host']}: new IKE SAs on the VIP refused")
        # The virtual server goes offline before its SAs: once they are deleted nothing of the
        # service may leave the VIP in clear (a lowest-priority block: SAs still win while up).
        # Without it, a DELETE slow to confirm on a loaded machine let in-flight answers out in
        # clear between the SA's deletion and the VIP's removal.
        _ip(src["ns"], "xfrm", "policy", "add", "src", f"{scenario['vip']}/32", "dst", "0.0.0.0/0",
            "proto", scenario["protocol"], "sport", str(scenario["port"]), "dir", "out",
            "priority", str(OFFLINE_PRIORITY), "action", "block")
        steps.append(f"{src['host']}: service on the VIP offline (its answers blocked once its SAs go)")
        deleted, unconfirmed = owner_charon.terminate_all(DELETE_WAIT_MS)  # peers re-arm their traps
        steps.append(f"{src['host']}: deleted {deleted} IKE_SAs (peers told)" + (
            f"; {unconfirmed} DELETE not confirmed within {DELETE_WAIT_MS / 1000:g} s" if unconfirmed else ""))
        _address(src, scenario["vip_cidr"], rtnl.del_address, f"{src['host']} giving up the VIP")
        steps.append(f"{src['host']}: VIP removed")
    else:
        owner_charon.proc.send_signal(signal.SIGKILL)  # no DELETE: the peer is not told
        rtnl.apply(src["ns"], lambda index: [rtnl.link_down(src["ifname"])], inside, f"{src['host']} crashing")
        steps.append(f"{src['host']}: charon killed, link down (crash)")
    _take_vip(dst, scenario["vip_cidr"], scenario["vip"])
    steps.append(f"{dst['host']}: VIP taken, gratuitous ARP sent")
    return {"t_event": t0, "t_event_done": time.time(), "steps": steps}


def sa_up_since(charon, vip: str) -> float | None:
    """When the client's charon last reported a CHILD_SA with the VIP up (its event stream)."""
    if charon is None:
        return None
    ups = [ev["t"] for ev in list(charon.events) if ev.get("event") == "child-updown"
           and ev["data"].get("up") == "yes"
           and any(isinstance(ike, dict) and ike.get("remote-host") == vip for ike in ev["data"].values())]
    return max(ups) if ups else None


def _gave_up(charon) -> int:
    """Negotiations the client's charon abandoned so far ("giving up after N retransmits")."""
    try:
        with open(charon.log_path, errors="replace") as f:
            return sum(1 for line in f if "giving up after" in line)
    except (OSError, AttributeError):
        return 0


def wait_steady(scenario: dict, stream: RequestStream, client_charon) -> dict:
    """Until requests are answered through an established SA (or, for a client without IPsec,
    simply answered), at least `warmup` seconds in; gives up after STEADY_TIMEOUT."""
    started = time.time()
    while True:
        now = time.time()
        up = sa_up_since(client_charon, scenario["vip"]) if client_charon else started
        answered = stream.answered_since(up) if up else 0
        if up and answered >= STEADY_REQUESTS and now - started >= scenario["warmup"]:
            return {"steady": True, "after": round(now - started, 2), "sa_up_after": round(up - started, 2),
                    "ike_gave_up": _gave_up(client_charon)}
        if now - started > STEADY_TIMEOUT:
            why = (f"no CHILD_SA with {scenario['vip']} within {STEADY_TIMEOUT:g} s" if not up else
                   f"CHILD_SA up after {up - started:.1f} s but only {answered} requests in a row answered since")
            gave_up = _gave_up(client_charon)
            if gave_up:
                why += f"; the client's IKE gave up {gave_up} time(s) after its retransmits"
            return {"steady": False, "after": round(now - started, 2), "why": why}
        time.sleep(0.05)


def run(scenario: dict, charons: dict, progress) -> dict:
    stream = RequestStream(scenario)
    stream.start()
    steady = wait_steady(scenario, stream, charons.get(scenario["src"]))
    if not steady["steady"]:  # moving the VIP now would measure the first negotiation, not a failover
        stream.stop()
        progress("failover", f"no steady state before the move: {steady['why']}; VIP not moved")
        now = time.time()
        return {"t_event": now, "t_event_done": now, "steps": [], "steady": steady,
                "requests": sorted(stream.requests, key=lambda r: r["n"]), "deadline": now}
    progress("failover", f"steady after {steady['after']:.1f} s (SA up after {steady['sa_up_after']:.1f} s, "
                         f"{STEADY_REQUESTS} requests in a row answered through it)")
    progress("failover", f"{scenario['mode']}: moving {scenario['vip']} from {scenario['from']['host']} "
                         f"to {scenario['to']['host']} under {scenario['rate']:g} requests/s")
    event = move_vip(scenario, charons[scenario["from"]["host"]])
    deadline = event["t_event"] + scenario["deadline"]
    recovered = None
    while time.time() < deadline:
        recovered = stream.last_ok_after(event["t_event_done"])
        if recovered and time.time() > recovered + TAIL:
            break
        time.sleep(0.1)
    stream.stop()
    progress("failover", f"recovered after {recovered - event['t_event']:.2f} s" if recovered
             else f"no recovery within {scenario['deadline']:.0f} s")
    return {**event, "requests": sorted(stream.requests, key=lambda r: r["n"]), "deadline": deadline,
            "steady": steady}
