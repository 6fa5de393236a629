"""Real sockets between lab hosts: a listener per declared service, a probe per expectation.

Runs inside the lab kernel, all in one process: each socket is created inside its host's
namespace (setns on the creating thread) and keeps that namespace for life, so listeners and
probes cost threads, not process starts. A listener answers `LABOK <marker>` to whatever
it receives; the probe counts as delivered only when that answer comes back.
"""

from __future__ import annotations

import errno
import os
import select
import selectors
import socket
import threading
import time

from lab.contract import Plan
from lab.guest.netns import inside

REPLY = b"LABOK "
HEAD = 4096  # bytes of a TCP probe's payload a listener keeps: the marker and the login are there
BULK_CHUNK = bytes(range(256)) * 256  # 64 KiB of filler for bulk probes


class Listeners:
    """TCP and UDP echo-style servers in every host namespace; records what each received.
    One thread waits on every listening socket at once and sleeps until one is ready (a
    thread per socket, each waking five times a second, cost the guest's one CPU seconds per
    phase with 40 hosts); each TCP connection is served by a thread of its own."""

    def __init__(self):
        self.received: list[dict] = []
        self._selector = selectors.DefaultSelector()
        self._wake = os.pipe()
        self._selector.register(self._wake[0], selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None
        self._socks: list[socket.socket] = []

    def start(self, hosts: list[dict]) -> None:
        for h in hosts:
            for svc in h["listeners"]:
                with inside(h["ns"]):
                    s = self._bind(svc["protocol"], svc["port"])
                    for g in svc.get("groups", []):
                        mreq = socket.inet_aton(g["group"]) + socket.inet_aton(g["address"])
                        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
                self._socks.append(s)
                self._selector.register(s, selectors.EVENT_READ, (h["name"], svc))
        if self._socks and self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="listeners", daemon=True)
            self._thread.start()

    @staticmethod
    def _bind(protocol: str, port: int) -> socket.socket:
        kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        if protocol == "tcp":
            s.listen(64)
        s.setblocking(False)  # woken by the selector: a spurious wake-up must not block the others
        return s

    def _record(self, host: str, svc: dict, peer, data: bytes) -> bytes | None:
        marker = _find_marker(data)
        self.received.append({"host": host, "protocol": svc["protocol"], "port": svc["port"],
                              "peer": f"{peer[0]}:{peer[1]}", "marker": marker, "t": time.time()})
        return REPLY + marker.encode() + b"\n" if marker else None

    def _serve(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    return  # stop() woke us
                host, svc = key.data
                if svc["protocol"] == "tcp":
                    self._accept(host, svc, key.fileobj)
                else:
                    self._datagram(host, svc, key.fileobj)

    def _accept(self, host: str, svc: dict, s: socket.socket) -> None:
        try:
            conn, peer = s.accept()
        except OSError:  # BlockingIOError: another wake-up took it
            return
        conn.setblocking(True)
        threading.Thread(target=self._handle_tcp, args=(host, svc, conn, peer), daemon=True).start()

    def _handle_tcp(self, host: str, svc: dict, conn: socket.socket, peer) -> None:
        with conn:
            conn.settimeout(5)
            head, total = b"", 0
            try:
                # The probe half-closes after its payload. Keep the start (where the marker is)
                # and count the rest: a bulk probe (B16) sends megabytes.
                while chunk := conn.recv(65536):
                    if len(head) < HEAD:
                        head += chunk[:HEAD - len(head)]
                    total += len(chunk)
                answer = self._record(host, svc, peer, head)
                if answer:
                    conn.sendall(answer)
            except OSError:
                pass

    def _datagram(self, host: str, svc: dict, s: socket.socket) -> None:
        try:
            data, peer = s.recvfrom(4096)
        except OSError:
            return
        answer = self._record(host, svc, peer, data)
        if answer:
            try:
                s.sendto(answer, peer)
            except OSError:
                # A local policy refused the reply (EPERM from the IKEv1 reply guard while
                # the SA's policies are not in yet): like a lost packet, the prober resends
                # and the next reply goes. An uncaught error here ended the listener.
                pass

    def stop(self) -> None:
        if self._wake is None:
            return  # stopped already
        if self._thread is not None:
            os.write(self._wake[1], b"x")
            self._thread.join(timeout=1)
        for s in self._socks:
            s.close()
        self._selector.close()
        for fd in self._wake:
            os.close(fd)
        self._wake = None


def _find_marker(data: bytes) -> str | None:
    start = data.find(b"LABPROBE-")
    if start < 0:
        return None
    end = start
    while end < len(data) and (chr(data[end]).isalnum() or data[end] in b"-"):
        end += 1
    return data[start:end].decode()


SLICE = 0.2  # how often a waiting probe looks whether it was told to give up


class GaveUp(Exception):
    """The evidence that the flow cannot be delivered is final (lab.guest.finality)."""


class Deadline:
    """A probe's timeout, which the finality watcher may cut short with its reason."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.reason: str | None = None
        self.finished = False  # the probe has its outcome; nothing to watch
        self.sport: int | None = None  # the probe's own source port, once bound (one socket per probe)

    def give_up(self, reason: str) -> None:
        self.reason = reason

    def left(self, cap: float | None = None) -> float:
        if self.reason:
            raise GaveUp(self.reason)
        left = self.at - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        return min(left, cap) if cap else left


def _socket(protocol: str) -> socket.socket:
    if protocol == "tcp":
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if protocol == "icmp":  # a ping socket: the kernel fills in the echo id and checksum
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def run_probe(probe: dict, ns: str, deadline: Deadline | None = None) -> dict:
    """Send the probe's payload and wait for the listener's answer, within the probe's timeout
    (or until the finality watcher gives up for it). Broadcast and multicast probes are
    one-way: the listener's log says whether they arrived."""
    with inside(ns):
        s = _socket(probe["protocol"])
    result = {"id": probe["id"], "delivered": False, "error": None, "sport": None,
              "t_start": time.time(), "t_end": None, "t_reply": None}
    deadline = deadline or Deadline(probe["timeout"])
    deadline.at = time.monotonic() + deadline.seconds  # from this probe's own start
    payload = probe["payload"].encode()
    try:
        s.bind((probe["src_address"], 0))
        result["sport"] = deadline.sport = s.getsockname()[1]
        dst = (probe["dst_address"], probe["port"])
        if probe.get("via", "unicast") != "unicast":
            _one_way(s, dst, payload, probe["via"], probe["src_address"])
            return result
        if probe["protocol"] == "tcp":
            answer = _tcp_exchange(s, dst, payload, deadline, probe.get("bulk", 0), result)
        elif probe["protocol"] == "icmp":
            answer = _icmp_exchange(s, probe["dst_address"], payload, deadline)
        else:
            answer = _udp_exchange(s, dst, payload, deadline)
        expected = probe["marker"].encode()
        if answer and (answer.startswith(REPLY + expected) or (probe["protocol"] == "icmp" and expected in answer)):
            result["delivered"] = True
            result["t_reply"] = time.time()
    except socket.timeout:
        result["error"] = "timed out"
    except GaveUp as exc:
        result["error"] = f"given up, evidence final: {exc}"
        result["gave_up"] = str(exc)
    except OSError as exc:
        result["error"] = exc.strerror or str(exc)
    finally:
        s.close()
        result["t_end"] = time.time()
        deadline.finished = True
    return result


def _connect(s: socket.socket, dst, deadline: Deadline) -> None:
    """connect() in slices, so that a probe told to give up stops waiting at once."""
    s.setblocking(False)
    err = s.connect_ex(dst)
    while err in (errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN):
        _, ready, _ = select.select([], [s], [], deadline.left(SLICE))
        if ready:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err and err != errno.EISCONN:
        raise OSError(err, os.strerror(err))
    s.setblocking(True)


def _tcp_exchange(s: socket.socket, dst, payload: bytes, deadline: Deadline, bulk: int = 0,
                  result: dict | None = None) -> bytes:
    # A trapped flow's SYN waits in the kernel while IKE runs (xfrm_larval_drop = 0).
    _connect(s, dst, deadline)
    s.settimeout(deadline.left())
    started = time.time()  # bulk timing starts once connected: IKE is not part of the cost
    s.sendall(payload)
    left = bulk
    while left > 0:  # B16: the data whose transfer time measures the protection's cost
        s.settimeout(deadline.left())
        chunk = BULK_CHUNK[:min(left, len(BULK_CHUNK))]
        s.sendall(chunk)
        left -= len(chunk)
    s.shutdown(socket.SHUT_WR)
    if bulk and result is not None:
        result["bulk_bytes"], result["bulk_started"] = bulk, started
    data = b""
    while True:
        s.settimeout(deadline.left(SLICE))
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            continue  # deadline.left() ends the wait when the time is up
        if not chunk:
            return data
        data += chunk


def _udp_exchange(s: socket.socket, dst, payload: bytes, deadline: Deadline) -> bytes | None:
    # Resent every half second, in case one is lost (a policy may also refuse it for a while).
    while True:
        s.sendto(payload, dst)
        s.settimeout(deadline.left(0.5))
        try:
            data, _ = s.recvfrom(4096)
            return data
        except socket.timeout:
            deadline.left()


def _icmp_exchange(s: socket.socket, dst: str, payload: bytes, deadline: Deadline) -> bytes:
    """Echo request carrying the payload, resent every half second until the echo reply."""
    request = b"\x08\x00\x00\x00\x00\x00\x00\x01" + payload
    while True:
        s.sendto(request, (dst, 0))
        s.settimeout(deadline.left(0.5))
        try:
            data, _ = s.recvfrom(4096)
            if data[:1] == b"\x00":  # echo reply
                return data[8:]
        except socket.timeout:
            deadline.left()


def _one_way(s: socket.socket, dst, payload: bytes, via: str, src_address: str) -> None:
    if via == "broadcast":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    else:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(src_address))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    for _ in range(3):  # a few copies: the first may be held while a trap triggers IKE
        try:
            s.sendto(payload, dst)
        except OSError:
            pass  # a policy may refuse it outright (EPERM); the listener's log tells
        time.sleep(0.3)


def in_parallel(probes: list[dict], run) -> list[dict]:
    """Run `run(probe)` for every probe at once, each in its own thread; results in probe order."""
    results: dict[str, dict] = {}

    def worker(p):
        results[p["id"]] = run(p)

    threads = [threading.Thread(target=worker, args=(p,), daemon=True) for p in probes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [results[p["id"]] for p in probes]


def run_probes(plan: Plan, deadlines: dict[str, Deadline] | None = None) -> list[dict]:
    """`deadlines`, by probe id: those the finality watcher may cut short."""
    ns_of = plan.ns_of()
    deadlines = deadlines or {}
    # Tampered and bulk probes run alone, after these (lab.guest.executor).
    probes = [p for p in plan.probes if not p.get("tamper") and not p.get("bulk")]
    return in_parallel(probes, lambda p: run_probe(p, ns_of[p["src"]], deadlines.get(p["id"])))
