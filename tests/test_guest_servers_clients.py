"""Real servers and real clients of the guest runtime, run as real processes and sockets on this
host's loopback (every lab namespace is the test's own here)."""

from __future__ import annotations

import os
import socket
import socketserver
import stat
import sys
import threading
import time

import pytest
from fakes import free_ports

from lab.guest import clients, servers


def spec(tmp_path, argv, ports, name="web"):
    src = tmp_path / "rendered"
    (src / "log").mkdir(parents=True)
    (src / "site.conf").write_text("root @ROOT@\n")
    return {"dir": str(src), "templates": ["site.conf"], "secret_files": ["tls.key"], "chown": [],
            "daemons": [{"name": name, "argv": argv, "env": {"HOME": "@ROOT@"}}], "ports": ports}


def test_servers_start_listen_log_and_stop(tmp_path, one_namespace):
    [port] = free_ports(1)
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", "@ROOT@"]
    s = servers.Servers(str(tmp_path / "work"), {"be/tls.key": "PRIVATE"})
    host = {"name": "be", "ns": "lab-t-be", "servers": spec(tmp_path, argv, [["tcp", port]])}
    assert s.start([host, {"name": "fe", "ns": "lab-t-fe"}]) == ["web on be"]
    root = tmp_path / "work" / "servers" / "be"
    assert (root / "site.conf").read_text() == f"root {root}\n"  # @ROOT@ is the host's copy
    key = root / "tls.key"
    assert key.read_text() == "PRIVATE" and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert s.wait(time.monotonic() + 20) >= 0 and s.pending == []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"GET /site.conf HTTP/1.0\r\n\r\n")
        assert b"200" in c.recv(100)
    proc = s.procs[0][2]
    s.stop(str(tmp_path / "logs"))
    assert proc.poll() is not None and s.procs == []
    assert "GET /site.conf" in (tmp_path / "logs" / "be-web.out").read_text()
    assert s.log("be", "log/web.out").count("GET /site.conf") == 1 and s.log("be", "missing") == ""


def test_a_server_that_dies_at_start_is_named(tmp_path, one_namespace):
    s = servers.Servers(str(tmp_path / "work"), {"be/tls.key": "x"})
    host = {"name": "be", "ns": "lab-t-be", "servers": spec(tmp_path, ["false"], [["tcp", 1]], name="slapd")}
    s.start([host])
    with pytest.raises(RuntimeError, match="slapd on be exited at start; see its log"):
        s.wait(time.monotonic() + 10)
    s.stop()


def test_a_server_that_never_listens_is_named_with_its_ports(tmp_path, one_namespace):
    [port] = free_ports(1)
    s = servers.Servers(str(tmp_path / "work"), {"be/tls.key": "x"})
    host = {"name": "be", "ns": "lab-t-be", "servers": spec(tmp_path, ["sleep", "30"], [["tcp", port]])}
    s.start([host])
    with pytest.raises(RuntimeError, match=f"real servers on be not listening on tcp/{port}"):
        s.wait(time.monotonic() + 0.3)
    s.stop()


# ---- real clients -----------------------------------------------------------------------------

class MailServer(socketserver.ThreadingTCPServer):
    """The few lines of IMAP or POP3 a client's login needs; records what it was told."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, kind: str):
        self.kind, self.heard = kind, []
        super().__init__(("127.0.0.1", 0), self.Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            imap = self.server.kind == "imap"
            self.wfile.write(b"* OK ready\r\n" if imap else b"+OK ready\r\n")
            for line in self.rfile:
                text = line.decode().strip()
                self.server.heard.append(text)
                if not imap:
                    self.wfile.write(b"+OK 2 640\r\n" if text == "STAT" else b"+OK\r\n")
                    if text == "QUIT":
                        return
                    continue
                tag, _, rest = text.partition(" ")
                command = rest.split()[0].upper()
                if command == "CAPABILITY":
                    self.wfile.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n")
                elif command == "EXAMINE":
                    self.wfile.write(b"* 3 EXISTS\r\n")
                elif command == "LOGOUT":
                    self.wfile.write(b"* BYE\r\n")
                self.wfile.write(f"{tag} OK done\r\n".encode())
                if command == "LOGOUT":
                    return


def mail_probe(kind: str, port: int) -> dict:
    return {"id": "p1", "src": "fe", "src_address": "127.10.1.10", "timeout": 5.0,
            "client": {"kind": kind, "address": "127.0.0.1", "port": port, "user": "tester"}}


@pytest.mark.parametrize("kind, answer", [("imap", "IMAP LOGIN OK, INBOX 3 message(s)"),
                                          ("pop3", "POP3 PASS OK, 2 message(s)")])
def test_mail_clients_log_in_and_count_messages(kind, answer, tmp_path, one_namespace):
    server = MailServer(kind)
    try:
        [out] = clients.run_clients([mail_probe(kind, server.server_address[1])], {"fe": "lab-t-fe"},
                                    str(tmp_path), {"p1": "s3cret"})
    finally:
        server.shutdown()
        server.server_close()
    assert out["delivered"] and out["answer"] == answer and out["error"] is None
    assert out["sport"] and out["t_reply"] == out["t_end"] >= out["t_start"]
    assert any("tester" in h and "s3cret" in h for h in server.heard) or "PASS s3cret" in server.heard


def test_a_client_that_cannot_connect_is_a_verdict_not_an_error(tmp_path, one_namespace):
    [port] = free_ports(1)  # nobody listens there
    out = clients.run_client(mail_probe("pop3", port), "lab-t-fe", str(tmp_path / "c"), "pw")
    assert not out["delivered"] and out["error"].startswith("ConnectionRefusedError")


def external(kind: str, script: str, timeout: float = 5.0, **extra) -> dict:
    return {"id": "p2", "src": "fe", "src_address": "127.10.1.10", "timeout": timeout,
            "client": {"kind": kind, "user": "tester", "argv": ["sh", "-c", script],
                       "env": {"OUT": "@DIR@/out"}, "files": {"ca.pem": "CA"}, **extra}}


def test_curl_status_port_and_body_make_the_answer(tmp_path, one_namespace):
    script = 'cat @DIR@/login > "$OUT"; printf "hello LABPROBE-p2" > @DIR@/body; echo "200 41234"'
    folder = tmp_path / "c"
    out = clients.run_client(external("curl", script, expect="LABPROBE-p2", refused_status=403), "ns", str(folder), "pw")
    assert out["delivered"] and not out["refused"] and out["sport"] == 41234
    assert out["answer"] == "HTTP 200: hello LABPROBE-p2"
    assert (folder / "out").read_text() == 'user = "tester:pw"\n' and (folder / "ca.pem").read_text() == "CA"
    assert stat.S_IMODE(os.stat(folder / "login").st_mode) == 0o600
    refused = clients.run_client(external("curl", 'echo "403 0"', expect="x", refused_status=403), "ns",
                                 str(tmp_path / "r"), "pw")
    assert refused["refused"] and not refused["delivered"] and refused["sport"] is None


def test_kinit_reads_its_password_on_stdin(tmp_path, one_namespace):
    out = clients.run_client(external("kinit", 'read pw; [ "$pw" = pw ]'), "ns", str(tmp_path / "k"), "pw")
    assert out["delivered"] and out["answer"] == "ticket-granting ticket issued to tester"
    wrong = clients.run_client(external("kinit", 'read pw; echo "bad password" >&2; exit 1'), "ns",
                               str(tmp_path / "w"), "pw")
    assert not wrong["delivered"] and wrong["error"] == "kinit exit 1: bad password"


def test_ldapsearch_output_and_timeouts(tmp_path, one_namespace):
    out = clients.run_client(external("ldapsearch", 'cat @DIR@/password; echo " dn: cn=x"', expect="dn: cn=x"),
                             "ns", str(tmp_path / "l"), "pw")
    assert out["delivered"] and out["answer"] == "pw dn: cn=x"
    slow = clients.run_client(external("ldapsearch", "sleep 5", timeout=0.3), "ns", str(tmp_path / "s"), "pw")
    assert slow["error"] == "ldapsearch timed out" and not slow["delivered"]


def test_proxied_legs_are_read_from_the_back_ends_access_log():
    probes = [{"id": "p3", "dst": "be", "src_address": "10.10.1.10", "proxied": {"of": "p1"}},
              {"id": "p4", "dst": "be", "src_address": "10.10.1.10", "proxied": {"of": "p2"}}]
    log = "10.10.1.10 51234 1796280001.250 200 /LABPROBE-p1-x\n10.10.2.50 40000 1796280002.0 200 /LABPROBE-p2-y\n"
    found, missing = clients.proxied_outcomes(probes, {"p1": {"t_start": 1.0, "t_end": 2.0}}, {"be": log},
                                              {"p1": "LABPROBE-p1-x", "p2": "LABPROBE-p2-y"})
    assert found["delivered"] and found["sport"] == 51234 and found["t_reply"] == 1796280001.25
    assert found["answer"] == "back-end answered HTTP 200" and found["t_start"] == 1.0
    assert not missing["delivered"] and missing["error"] == "the back-end never logged the proxied request"


def test_a_client_the_watcher_gave_up_on_is_killed_with_its_reason(tmp_path, one_namespace):
    import threading
    import time

    from lab.guest.traffic import Deadline
    deadline = Deadline(30)
    threading.Timer(0.3, deadline.give_up, args=("edge runs no IPsec",)).start()
    t0 = time.monotonic()
    out = clients.run_client(external("curl", "exec sleep 20", timeout=30), "ns", str(tmp_path / "g"), "pw", deadline)
    assert time.monotonic() - t0 < 3  # killed at once, not at curl's 20 s
    assert out["error"] == "given up, evidence final: edge runs no IPsec" and out["gave_up"] == "edge runs no IPsec"
    assert not out["delivered"] and deadline.finished
