"""One strongSwan charon per IPsec host, each in its namespace, driven only over VICI.

Runs inside the lab kernel. charon gets its own strongswan.conf (plugins, VICI socket, log file)
and a private /run (`ip netns exec` already gives it a private mount namespace), so pid files of
several daemons do not clash.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import threading
import time

import vici

from lab.guest.netns import spawn_private_run

CHARON = "/usr/lib/ipsec/charon"
# An explicit plugin list: the default loads ~70 plugins, which is slow in the guest and
# brings in plugins (stroke, forecast) that read host files or join multicast groups.
PLUGINS = "random nonce openssl kdf pem pkcs1 x509 pubkey revocation constraints kernel-netlink socket-default vici"
EVENTS = ["ike-updown", "child-updown", "ike-rekey", "child-rekey"]

CONF = """charon {{
  load = {plugins}
  install_routes = no
  # Retransmit every second, as Windows retries ISAKMP within its 3 s soft-SA window
  # (charon's default waits 4 s first, so one lost answer would look like a silent peer).
  retransmit_timeout = {retransmit_timeout}
  retransmit_base = 1.0
  retransmit_jitter = 0
  retransmit_tries = {retransmit_tries}
  plugins {{
    openssl {{
      # OpenSSL's legacy provider (single DES, Blowfish, CAST, MD4) only where an IKE proposal
      # needs it (legacy_needed): loading it cost ~9% of each daemon's start-up in the guest.
      load_legacy = {load_legacy}
    }}
    vici {{
      socket = unix://{socket}
    }}
    kernel-netlink {{
      # After a negotiation gives up, the kernel sends no new ACQUIRE for its trap until the
      # larval state expires: 165 s by default. Windows renegotiates on the next packet once a
      # Main Mode has failed; so does the lab, once the retransmission budget is spent.
      xfrm_acq_expires = {acq_expires}
    }}
  }}
  syslog {{
    daemon {{
      default = -1
    }}
  }}
  filelog {{
    lab {{
      path = {log}
      time_format = %H:%M:%S
      time_add_ms = yes
      ike_name = yes
      flush_line = yes
      default = 1
      ike = 1
      cfg = 1
      knl = 1
    }}
  }}
}}
"""


def render_conf(socket_path: str, log_path: str, settings: dict | None = None) -> str:
    """strongswan.conf for one daemon; `settings` from the plan override the defaults."""
    # The lab's own budget: a retransmit every second, up to 8 (given up after 9 s, inside a
    # probe's 10 s). 4 (5 s) was too thin: with 20 pairs negotiating at once on a loaded
    # machine, answers took up to 3.6 s, and a slower hour would have turned them into drops.
    values = {"retransmit_timeout": "1.0", "retransmit_tries": "8", "load_legacy": "yes", **(settings or {})}
    values.setdefault("acq_expires", str(retransmit_budget(values)))
    return CONF.format(plugins=PLUGINS, socket=socket_path, log=log_path, **values)


LEGACY_IKE = {"des", "desiv64", "desiv32", "blowfish", "blowfish128", "blowfish192", "blowfish256",
              "cast128", "md4", "idea", "rc5"}  # algorithms charon's OpenSSL takes from the legacy provider


def legacy_needed(conns: dict) -> str:
    """'yes' when an IKE proposal of these connections names a legacy algorithm; only IKE's:
    ESP and AH are the kernel's crypto, not OpenSSL's."""
    tokens = {t for conn in conns.values() for p in conn.get("proposals") or [] for t in p.split("-")}
    return "yes" if tokens & LEGACY_IKE or not conns else "no"


def retransmit_budget(values: dict) -> int:
    """Seconds from a request to charon giving up on it (retransmit_base 1.0: a fixed interval),
    rounded up to whole seconds as the sysctl wants, at least 1."""
    total = float(values["retransmit_timeout"]) * (int(values["retransmit_tries"]) + 1)
    return max(1, -int(-total // 1))


def decode(value):
    """VICI answers in bytes inside OrderedDicts; the lab works in str and plain dicts."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


class EventHub:
    """Every charon's SA events, recorded by one thread that sleeps until one arrives. A thread
    per daemon, each waking five times a second to look for a stop, cost the guest's one CPU
    more than the probes themselves with 40 daemons (seconds per phase)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._selector: selectors.BaseSelector | None = None
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    def watch(self, daemon: "Charon") -> None:
        """Register `daemon`'s events on a session of its own (a session that listens takes
        no commands), then record them as they come."""
        session = vici.Session(daemon._sock())
        for event in EVENTS:
            session._register_unregister(event, True)
        daemon.event_session = session
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._selector = selectors.DefaultSelector()
                self._wake = os.pipe()
                self._selector.register(self._wake[0], selectors.EVENT_READ, None)
                self._thread = threading.Thread(target=self._run, args=(self._selector, self._wake[0]),
                                                name="charon-events", daemon=True)
                self._thread.start()
            self._selector.register(session.transport.socket, selectors.EVENT_READ, daemon)
            os.write(self._wake[1], b"w")  # the thread picks the new socket up at once

    def _run(self, selector: selectors.BaseSelector, wake: int) -> None:
        while True:
            for key, _ in selector.select():
                daemon = key.data
                if daemon is None:
                    os.read(wake, 512)
                    continue
                try:
                    packet = vici.protocol.Packet.parse(daemon.event_session.transport.receive())
                except Exception as exc:  # the daemon went away (teardown, or a crash scenario)
                    with self._lock:
                        try:
                            selector.unregister(key.fileobj)
                        except (KeyError, ValueError):
                            pass
                    if not daemon._stop.is_set():
                        daemon.events.append({"t": time.time(), "event": "listener-error", "data": str(exc)})
                    continue
                if daemon._stop.is_set() or packet.response_type != vici.protocol.Packet.EVENT:
                    continue
                data = decode(vici.protocol.Message.deserialize(packet.payload))
                daemon.events.append({"t": time.time(), "event": packet.event_type.decode(), "data": data})

    def forget(self, daemon: "Charon") -> None:
        session, daemon.event_session = daemon.event_session, None
        if session is None:
            return
        with self._lock:
            try:
                self._selector.unregister(session.transport.socket)
            except (KeyError, ValueError):
                pass  # already dropped when the daemon went away
        session.transport.socket.close()


EVENTS_HUB = EventHub()


class Charon:
    """A charon process in a namespace, its VICI session and a recorder of its SA events."""

    def __init__(self, host: str, ns: str, workdir: str, log_dir: str | None = None):
        self.host, self.ns = host, ns
        self.dir = os.path.join(workdir, host)
        self.socket_path = os.path.join(self.dir, "charon.vici")
        # `log_dir`: written straight into the run's output (a host path), so that a guest that
        # crashes or is killed for hanging still leaves every daemon's log behind.
        self.log_path = os.path.join(log_dir, f"charon-{host}.log") if log_dir else os.path.join(self.dir, "charon.log")
        self.proc: subprocess.Popen | None = None
        self.session: vici.Session | None = None
        self.events: list[dict] = []
        self.settings: dict[str, str] = {}  # strongswan.conf values from the plan (timer profiles)
        self._stop = threading.Event()
        self.event_session: vici.Session | None = None  # registered for EVENTS (EventHub)

    def start(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        conf = os.path.join(self.dir, "strongswan.conf")
        with open(conf, "w") as f:
            f.write(render_conf(self.socket_path, self.log_path, self.settings))
        if os.path.exists(self.socket_path):  # charon 5.9 leaves its socket behind
            os.unlink(self.socket_path)
        self.proc = self._spawn(conf)

    def _spawn(self, conf: str):
        """The daemon, reading `conf`; returns its process (Popen-like). Forked inside the host's
        namespace, with a private /run: one process image (charon)
        (lab.guest.netns.spawn_private_run); with 40 daemons, process starts were seconds."""
        env = dict(os.environ, STRONGSWAN_CONF=conf)
        return spawn_private_run(self.ns, [CHARON], env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def connect(self, deadline: float) -> None:
        """Wait for the VICI socket (charon takes ~1 s in the guest), then open the session."""
        while True:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"charon on {self.host} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                self.session = vici.Session(self._sock())
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"charon on {self.host}: no VICI socket at {self.socket_path} after waiting")
                time.sleep(0.05)
        EVENTS_HUB.watch(self)

    def _sock(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(self.socket_path)
        except OSError:
            s.close()
            raise
        return s

    def load(self, conns: dict, psk: str, credentials: dict | None = None) -> None:
        """Keys, then connections. `credentials` (authentication: certificates) holds PEM texts:
        the lab CA `ca`, its `crl`, and this host's own `cert` and private `key` (either may be
        absent: a host without a machine certificate)."""
        if credentials is None:
            # No owners: the key applies to any peer; the lab has one key per run.
            self.session.load_shared({"type": "IKE", "data": psk})
        else:
            self.load_credentials(credentials)
        for name, conn in conns.items():
            try:
                self.session.load_conn({name: conn})
            except vici.exception.CommandException as exc:
                raise RuntimeError(f"charon on {self.host} refused connection {name!r}: {exc}") from None

    def load_credentials(self, creds: dict) -> None:
        """Over VICI only: the CA as a trust anchor, its CRL (the revocation plugin consults it
        for every peer certificate), the host's certificate and its private key."""
        steps = [("CA certificate", self.session.load_cert, {"type": "X509", "flag": "CA", "data": creds["ca"]}),
                 ("CRL", self.session.load_cert, {"type": "X509_CRL", "flag": "NONE", "data": creds["crl"]})]
        if creds.get("cert"):
            steps.append(("machine certificate", self.session.load_cert,
                          {"type": "X509", "flag": "NONE", "data": creds["cert"]}))
        if creds.get("key"):
            steps.append(("private key", self.session.load_key, {"type": "ECDSA", "data": creds["key"]}))
        for what, call, message in steps:
            try:
                call(message)
            except vici.exception.CommandException as exc:  # charon's words; never the data
                raise RuntimeError(f"charon on {self.host} refused its {what}: {exc}") from None

    def list_sas(self) -> list[dict]:
        return [decode(sa) for sa in self.session.list_sas()]

    def terminate_all(self, wait_ms: int) -> tuple[int, int]:
        """Delete every IKE_SA, telling each peer (a planned cluster move). Waits up to `wait_ms`
        per SA for the peer's answer; charon sends the DELETE either way, so an answer slower
        than that (a loaded machine) is counted, not an error. Returns (deleted, unconfirmed)."""
        ids = [ike["uniqueid"] for entry in self.list_sas() for ike in entry.values()]
        unconfirmed = 0
        for uid in ids:
            try:
                list(self.session.terminate({"ike-id": uid, "timeout": str(wait_ms)}))
            except vici.exception.CommandException:  # "terminating SA failed": not answered in time
                unconfirmed += 1
        return len(ids), unconfirmed

    def list_policies(self) -> list[dict]:
        return [decode(p) for p in self.session.list_policies({"trap": "yes", "pass": "yes", "drop": "yes"})]

    def stop(self) -> None:
        self._stop.set()
        EVENTS_HUB.forget(self)
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def reap(self, grace: float) -> None:
        if not self.proc:
            return
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
