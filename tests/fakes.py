"""Stand-ins for what the guest runtime drives, so it can be tested without root or a guest.

- `ScriptedVici`: a VICI server on a Unix socket, speaking strongSwan's wire protocol (framed
  with the `vici` package's own encoder), answering from a script and recording every request.
- `Recorder`: takes the place of `subprocess.run` / `subprocess.Popen` and of
  `lab.guest.netns.spawn_private_run` (a daemon started inside a namespace with a private /run,
  which needs root and a real namespace); records each command line (its stdin, its namespace)
  and answers from rules. A `charon` it is asked to start becomes a `ScriptedVici` on the
  socket named in the strongswan.conf it was given.
- `loopback_plan`: a real plan (lab.compile) with every 10.x address moved to 127.x and every
  listener on a free port, so the executor's real sockets run on this host's loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass, field

from vici.protocol import FiniteStream, Message, Packet

from lab.contract import Plan


def _encode(value):
    """Plain values the way charon sends them: every leaf a string."""
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return str(value)


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class ScriptedVici:
    """A charon as VICI shows it. `requests` records (command, message) in order; `sas` and
    `policies` are what list-sas and list-policies stream; `refuse` maps a command (or
    `load-conn:NAME`) to the error charon would give; `events` go to every listener."""

    STREAMS = {"list-sas": "list-sa", "list-policies": "list-policy", "terminate": "control-log",
               "initiate": "control-log"}

    def __init__(self, path: str):
        self.path = path
        self.requests: list[tuple[str, dict]] = []
        self.sas: list[dict] = []
        self.policies: list[dict] = []
        self.refuse: dict[str, str] = {}
        self.events: list[tuple[str, dict]] = []
        self._listeners: list[socket.socket] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        if os.path.exists(path):
            os.unlink(path)
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(path)
        self.server.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _send(conn, payload: bytes):
        conn.sendall(struct.pack("!I", len(payload)) + payload)

    def _event(self, conn, name: str, message: dict):
        self._send(conn, struct.pack("!BB", Packet.EVENT, len(name)) + name.encode()
                   + Message.serialize(_encode(message)))

    def _serve(self, conn):
        try:
            while True:
                head = conn.recv(4, socket.MSG_WAITALL)
                if len(head) < 4 or self._closed:  # a daemon gone away answers nothing more
                    return
                data = conn.recv(struct.unpack("!I", head)[0], socket.MSG_WAITALL)
                kind, n = data[0], data[1]
                name = data[2:2 + n].decode()
                if kind in (Packet.EVENT_REGISTER, Packet.EVENT_UNREGISTER):
                    self._send(conn, bytes([Packet.EVENT_CONFIRM]))
                    if kind == Packet.EVENT_REGISTER and name not in self.STREAMS.values():
                        with self._lock:
                            if conn not in self._listeners:
                                self._listeners.append(conn)
                                # After the client's other registrations: vici drops events
                                # that arrive while it waits for a confirmation.
                                threading.Timer(0.3, self._replay, args=(conn,)).start()
                    continue
                message = _plain(dict(Message.deserialize(FiniteStream(data[2 + n:]))))
                self.requests.append((name, message))
                self._answer(conn, name, message)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _answer(self, conn, name: str, message: dict):
        key = f"{name}:{next(iter(message), '')}" if name == "load-conn" else name
        if key in self.refuse or name in self.refuse:
            reply = {"success": "no", "errmsg": self.refuse.get(key) or self.refuse[name]}
        elif name == "list-sas":
            for sa in self.sas:
                self._event(conn, "list-sa", sa)
            reply = {}
        elif name == "list-policies":
            for p in self.policies:
                self._event(conn, "list-policy", p)
            reply = {}
        elif name == "terminate":
            uid = message.get("ike-id")
            self.sas = [e for e in self.sas if all(ike.get("uniqueid") != uid for ike in e.values())]
            self._event(conn, "control-log", {"msg": f"deleting IKE_SA {uid}"})
            reply = {"success": "yes", "matches": "1"}
        else:
            reply = {"success": "yes"}
        self._send(conn, bytes([Packet.CMD_RESPONSE]) + Message.serialize(_encode(reply)))

    def _replay(self, conn):
        with self._lock, contextlib.suppress(OSError):
            for label, msg in self.events:
                self._event(conn, label, msg)

    def emit(self, label: str, message: dict):
        """An event, now, to every registered listener."""
        self.events.append((label, message))
        with self._lock:
            for conn in self._listeners:
                self._event(conn, label, message)

    def commands(self, name: str) -> list[dict]:
        return [m for c, m in self.requests if c == name]

    def close(self):
        self._closed = True
        with contextlib.suppress(OSError):
            self.server.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
                c.close()


class FakeProcess:
    """What subprocess.Popen returns, for a process that runs until it is signalled."""

    def __init__(self, argv, returncode_on_exit: int = 0, stderr_text: bytes = b""):
        self.args = argv
        self.pid = 0
        self.returncode = None
        self._exit = returncode_on_exit
        self.signals: list[int] = []
        self.stdin = None
        self.stdout = None
        r, w = os.pipe()
        os.write(w, stderr_text)
        os.close(w)
        self.stderr = os.fdopen(r, "rb")
        self.on_exit = None

    def poll(self):
        return self.returncode

    def _end(self):
        if self.returncode is None:
            self.returncode = self._exit
            if self.on_exit:
                self.on_exit()

    def send_signal(self, sig):
        self.signals.append(sig)
        self._end()

    def terminate(self):
        self.send_signal(15)

    def kill(self):
        self.send_signal(9)

    def wait(self, timeout=None):
        self._end()
        return self.returncode

    def communicate(self, input=None, timeout=None):
        self._end()
        return "", ""


@dataclass
class Call:
    argv: list[str]
    input: str | None = None
    env: dict | None = None
    ns: str | None = None  # spawn_private_run: the namespace it was started in (argv has none)
    popen: dict | None = None  # spawn_private_run: the remaining Popen arguments


@dataclass
class Recorder:
    """subprocess.run / Popen, recorded. `answers`: (regex on the joined argv, stdout,
    returncode); the first match answers, otherwise stdout "" and 0."""

    workdir: str = ""
    calls: list[Call] = field(default_factory=list)
    answers: list[tuple[str, str, int]] = field(default_factory=list)
    charons: dict[str, ScriptedVici] = field(default_factory=dict)  # socket path -> server
    sas: dict[str, list[dict]] = field(default_factory=dict)  # namespace -> list-sas script
    refuse: dict[str, str] = field(default_factory=dict)  # given to every charon (ScriptedVici.refuse)
    events: dict[str, list] = field(default_factory=dict)  # namespace -> events its listeners get

    def answer(self, pattern: str, stdout: str = "", returncode: int = 0) -> None:
        self.answers.insert(0, (pattern, stdout, returncode))

    def _lookup(self, argv) -> tuple[str, int]:
        line = " ".join(map(str, argv))
        for pattern, stdout, code in self.answers:
            if re.search(pattern, line):
                return stdout, code
        return "", 0

    def run(self, argv, input=None, capture_output=False, text=False, check=False, env=None, **kw):
        self.calls.append(Call(list(map(str, argv)), input, env))
        stdout, code = self._lookup(argv)
        if check and code:
            raise subprocess.CalledProcessError(code, argv, stdout, "")
        return subprocess.CompletedProcess(argv, code, stdout if text else stdout.encode(), "" if text else b"")

    def popen(self, argv, env=None, **kw):
        self.calls.append(Call(list(map(str, argv)), None, env))
        return self._start(argv, env, argv[argv.index("exec") + 1] if "exec" in argv else "")

    def spawn(self, ns, argv, env=None, **kw):
        """netns.spawn_private_run(ns, argv, **popen): recorded with its namespace."""
        self.calls.append(Call(list(map(str, argv)), None, env, ns=ns, popen=kw))
        return self._start(argv, env, ns)

    def _start(self, argv, env, ns):
        line = " ".join(map(str, argv))
        if "tcpdump" in line:  # ready at once, as tcpdump says on stderr
            return FakeProcess(argv, stderr_text=b"listening on br0, link-type EN10MB\n")
        proc = FakeProcess(argv)
        conf = (env or {}).get("STRONGSWAN_CONF")
        if conf:  # a charon: serve VICI where its configuration says
            sock = re.search(r"socket = unix://(\S+)", open(conf).read()).group(1)
            server = ScriptedVici(sock)
            server.sas = self.sas.get(ns, [])
            server.refuse = dict(self.refuse)
            server.events = list(self.events.get(ns, []))
            self.charons[ns] = server
            proc.on_exit = server.close
        return proc

    def commands(self, word: str) -> list[Call]:
        return [c for c in self.calls if word in " ".join(c.argv)]

    def close(self):
        for server in self.charons.values():
            server.close()


def free_ports(count: int) -> list[int]:
    """Distinct ports free for TCP and UDP (all held until every one is chosen)."""
    held, out = [], []
    while len(out) < count:
        s = socket.socket()
        s.bind(("0.0.0.0", 0))
        held.append(s)
        port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("0.0.0.0", port))
        except OSError:
            continue
        out.append(port)
    for s in held:
        s.close()
    return out


def loopback_plan(plan: Plan) -> Plan:
    """The same plan on this host's loopback: 10.a.b.c becomes 127.a.b.c, and each host's
    listeners get free ports of their own (all hosts share one namespace here)."""
    text = re.sub(r"\b10\.(\d+)\.(\d+)\.(\d+)\b", r"127.\1.\2.\3", json.dumps(plan.to_json()))
    text = re.sub(r"\b203\.0\.113\.(\d+)\b", r"127.203.113.\1", text)  # TEST-NET-3: the outside
    raw = json.loads(text)
    ports, free = {}, free_ports(sum(len(h["listeners"]) for h in raw["hosts"]))
    for h in raw["hosts"]:
        for svc in h["listeners"]:
            ports[(h["name"], svc["protocol"], svc["port"])] = svc["port"] = free.pop()
    for p in raw["probes"]:
        owner = (p.get("cluster") or {}).get("holder") or p["dst"]  # a cluster's VIP: its holder answers
        p["port"] = ports.get((owner, p["protocol"], p["port"]), p["port"])
    return Plan.from_json(raw, "loopback plan")


def child_sa(name: str, local: str, remote: str, spi_in: str, spi_out: str, local_ts: list[str],
             remote_ts: list[str], protocol: str = "ESP", **extra) -> dict:
    return {"name": name, "state": "INSTALLED", "protocol": protocol, "mode": "TRANSPORT",
            "encr-alg": "AES_GCM_16", "encr-keysize": "256", "spi-in": spi_in, "spi-out": spi_out,
            "bytes-in": "293", "bytes-out": "163", "packets-in": "5", "packets-out": "5",
            "local-ts": local_ts, "remote-ts": remote_ts, **extra}
