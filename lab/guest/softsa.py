"""Windows' soft SA: when a peer does not answer IKE within the fallback time (3 s, 0.5 s with
Simple Policy Update), talk to it in clear. If it answers and negotiation then fails, stay
blocked: only silence falls back.

Runs inside the lab kernel, one thread per charon that has `request` rules. It polls list-sas
over its own VICI session: an IKE_SA of a connection with request rules (one connection per
peer, one child per rule) that is still CONNECTING with no responder SPI after the fallback
time has had no answer at all. The soft SAs are pass shunts for exactly that peer, one per
request rule of the connection whose far end contains the peer, each with the rule's protocol
and port and ranked just above the rule's trap; then the silent IKE_SA is abandoned. Require
rules of the same connection get none: they stay blocked. A silent IKE_SA does not say which
of its rules' packets started it, so every request rule towards that peer falls back at once
(Windows would wait once per filter; the verdict is the same).
"""

from __future__ import annotations

import ipaddress
import threading
import time

import vici

from lab.guest.charon import Charon, decode

NO_ANSWER = "0000000000000000"
POLL = 0.1


class SoftSaAgent:
    def __init__(self, charon: Charon, fallbacks: dict[str, dict]):
        self.charon, self.fallbacks = charon, fallbacks
        self.installed: list[dict] = []
        self._first_seen: dict[str, float] = {}
        self._done: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"softsa-{charon.host}", daemon=True)

    def start(self) -> None:
        self.session = vici.Session(self.charon._sock())  # one session per thread
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            try:
                # Materialise first: a request sent while a streamed answer is still being
                # read breaks the session ("Unexpected response type").
                # noblock: skip IKE_SAs another thread holds. Installing a CHILD_SA with an
                # algorithm the guest kernel has not used yet holds its IKE_SA for seconds;
                # waiting for it would leave a silent peer unseen until charon gave it up.
                entries = [decode(e) for e in self.session.list_sas({"noblock": "yes"})]
                for entry in entries:
                    for conn, ike in entry.items():
                        self._check(conn, ike)
            except Exception as exc:  # daemon going away at teardown
                if not self._stop.is_set():
                    self.installed.append({"error": str(exc), "t": time.time()})
                return

    def _check(self, conn: str, ike: dict) -> None:
        hint = self.fallbacks.get(conn)
        if not hint or ike.get("state") != "CONNECTING" or ike.get("initiator") != "yes":
            return
        uid, peer = ike["uniqueid"], ike.get("remote-host")
        first = self._first_seen.setdefault(uid, time.time())
        if ike.get("responder-spi", NO_ANSWER) != NO_ANSWER or (conn, peer) in self._done:
            return  # the peer answered: a failure from here on blocks, it never falls back
        waited = time.time() - first
        if waited >= hint["seconds"]:
            self._fall_back(conn, uid, peer, hint, waited)

    def _fall_back(self, conn: str, uid: str, peer: str, hint: dict, waited: float) -> None:
        name = f"soft-{len(self.installed) + 1}"
        children = {f"soft-{c['rule']}": {
            "mode": "pass", "local_ts": c["local_ts"], "remote_ts": [f"{peer}/32{c['remote_suffix']}"],
            "start_action": "trap", "priority": str(c["priority"])} for c in covering(hint["children"], peer)}
        self._done.add((conn, peer))
        if not children:  # only require rules towards this peer: they stay blocked
            return
        self.session.load_conn({name: {
            "remote_addrs": ["127.0.0.1"], "local-1": {"auth": "psk"}, "remote-1": {"auth": "psk"},
            "children": children}})
        list(self.session.terminate({"ike-id": uid, "force": "yes", "timeout": "-1"}))
        covered = [ts for c in children.values() for ts in c["remote_ts"]]  # the verdict reads these
        self.installed.append({"t": time.time(), "conn": conn, "peer": peer, "after": round(waited, 3),
                               "shunt": name, "remote_ts": covered})


def covering(children: list[dict], peer: str) -> list[dict]:
    """The request rules of a connection whose far end contains this peer."""
    addr = ipaddress.ip_address(peer)
    return [c for c in children if any(addr in ipaddress.ip_network(p) for p in c["remote_prefixes"])]
