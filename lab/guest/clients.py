"""Real clients as probes: curl (HTTP, HTTPS with the lab CA), IMAP and POP3 logins (imaplib,
poplib), kinit, ldapsearch. Each runs in its source host's namespace against a real server.

A real-client probe is delivered when the client succeeds: exit status 0 and the expected
answer (the back-end's page, the test message in the mailbox, a ticket, the user's entry).
`refused`: the server answered and refused (HTTP 403, SSL required). The client's source port
is recorded where the client tells it (curl's %{local_port}, the Python socket); otherwise the
host matches the flow by addresses, protocol, port and the probe's time window.
Passwords come from the secrets the executor read; they go to 0600 files on the guest's tmpfs
or to the client's stdin, never onto a command line.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

from lab.guest.netns import inside
from lab.guest.traffic import SLICE, Deadline, GaveUp, in_parallel


def run_clients(probes: list[dict], ns_of: dict[str, str], workdir: str, passwords: dict[str, str],
                deadlines: dict[str, Deadline] | None = None) -> list[dict]:
    """`deadlines`, by probe id: those the finality watcher may cut short (a client program is
    then killed, as at its timeout, with the watcher's reason)."""
    deadlines = deadlines or {}
    return in_parallel(probes, lambda p: run_client(p, ns_of[p["src"]], os.path.join(workdir, "clients", p["id"]),
                                                    passwords.get(p["id"], ""), deadlines.get(p["id"])))


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def run_client(probe: dict, ns: str, folder: str, password: str, deadline: Deadline | None = None) -> dict:
    c = probe["client"]
    os.makedirs(folder, exist_ok=True)
    result = {"id": probe["id"], "delivered": False, "refused": False, "error": None, "sport": None,
              "t_start": time.time(), "t_end": None, "t_reply": None, "client": c["kind"], "answer": None}
    try:
        if c["kind"] in ("imap", "pop3"):
            _mail_login(c, probe, ns, password, result)
        else:
            _external(c, probe, ns, folder, password, result, deadline or Deadline(probe["timeout"]))
    except Exception as exc:  # noqa: BLE001  (a client that fails is a verdict, not a lab error)
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if deadline:
            deadline.finished = True
    result["t_end"] = time.time()
    if result["delivered"]:
        result["t_reply"] = result["t_end"]
    return result


def _external(c: dict, probe: dict, ns: str, folder: str, password: str, result: dict, deadline: Deadline) -> None:
    for name, text in c.get("files", {}).items():
        _write(os.path.join(folder, name), text)
    stdin = None
    if c["kind"] == "curl":
        _write(os.path.join(folder, "login"), f'user = "{c["user"]}:{password}"\n')
    elif c["kind"] == "ldapsearch":
        _write(os.path.join(folder, "password"), password)
    elif c["kind"] == "kinit":
        stdin = password + "\n"
    argv = [a.replace("@DIR@", folder) for a in c["argv"]]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           **{k: v.replace("@DIR@", folder) for k, v in c.get("env", {}).items()}}
    with inside(ns):
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    deadline.at = time.monotonic() + deadline.seconds  # from the client's own start
    while True:  # in slices, so that a client the watcher gave up on stops at once
        try:
            out, err = proc.communicate(stdin, timeout=deadline.left(SLICE))
            break
        except subprocess.TimeoutExpired:
            stdin = None  # sent with the first call; a retry continues where it was
        except (GaveUp, socket.timeout) as exc:
            proc.kill()
            proc.communicate()
            if isinstance(exc, GaveUp):
                result["error"], result["gave_up"] = f"given up, evidence final: {exc}", str(exc)
            else:
                result["error"] = f"{c['kind']} timed out"
            return
    if c["kind"] == "curl":
        status, _, port = out.strip().partition(" ")
        result["sport"] = int(port) if port.isdigit() and int(port) else None
        body = ""
        try:
            with open(os.path.join(folder, "body"), errors="replace") as f:
                body = f.read(300)
        except OSError:
            pass
        result["answer"] = f"HTTP {status}: {body.strip()[:120]}"
        result["delivered"] = proc.returncode == 0 and status == "200" and c["expect"] in body
        result["refused"] = proc.returncode == 0 and status == str(c.get("refused_status"))
    else:
        result["answer"] = (out.strip() or err.strip())[:160]
        if c["kind"] == "kinit" and proc.returncode == 0:
            result["answer"] = f"ticket-granting ticket issued to {c['user']}"
        result["delivered"] = proc.returncode == 0 and c.get("expect", "") in out
    if proc.returncode != 0:
        result["error"] = f"{c['kind']} exit {proc.returncode}: {err.strip()[-160:]}"


def _connect(probe: dict, c: dict, ns: str, deadline: float) -> socket.socket:
    with inside(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((probe["src_address"], 0))
    s.settimeout(max(0.1, deadline - time.monotonic()))
    s.connect((c["address"], c["port"]))  # outside the namespace lock: SYN retries while IKE runs
    return s


def _mail_login(c: dict, probe: dict, ns: str, password: str, result: dict) -> None:
    """A real IMAP (imaplib) or POP3 (poplib) session: log in, find the test message, log out."""
    deadline = time.monotonic() + probe["timeout"]
    sock = _connect(probe, c, ns, deadline)
    result["sport"] = sock.getsockname()[1]
    if c["kind"] == "imap":
        import imaplib

        class Imap(imaplib.IMAP4):
            def _create_socket(self, timeout):
                return sock
        m = Imap(c["address"], c["port"], timeout=max(0.1, deadline - time.monotonic()))
        m.login(c["user"], password)
        typ, data = m.select("INBOX", readonly=True)
        m.logout()
        count = int(data[0]) if typ == "OK" and data and data[0] else 0
        result["answer"] = f"IMAP LOGIN OK, INBOX {count} message(s)"
    else:
        import poplib

        class Pop(poplib.POP3):
            def _create_socket(self, timeout):
                return sock
        m = Pop(c["address"], c["port"], timeout=max(0.1, deadline - time.monotonic()))
        m.user(c["user"])
        m.pass_(password)
        count, _size = m.stat()
        m.quit()
        result["answer"] = f"POP3 PASS OK, {count} message(s)"
    result["delivered"] = count >= 1


def proxied_outcomes(probes: list[dict], outcomes: dict[str, dict], access_log: dict[str, str],
                     markers: dict[str, str]) -> list[dict]:
    """The legs a reverse proxy sent for real-client requests, found in the back-end's nginx access
    log (`$remote_addr $remote_port $msec $status "$request_uri"`): the exact 5-tuple, the time."""
    out = []
    for p in probes:
        origin = outcomes.get(p["proxied"]["of"], {})
        marker = markers[p["proxied"]["of"]]
        found = None
        for line in access_log.get(p["dst"], "").splitlines():
            cols = line.split()
            if len(cols) >= 5 and f"/{marker}" in cols[4] and cols[0] == p["src_address"]:
                found = cols
        res = {"id": p["id"], "delivered": bool(found and found[3] == "200"), "refused": False,
               "error": None if found else "the back-end never logged the proxied request",
               "sport": int(found[1]) if found else None, "t_start": origin.get("t_start", time.time()),
               "t_end": origin.get("t_end"), "t_reply": float(found[2]) if found else None,
               "client": "proxy", "answer": f"back-end answered HTTP {found[3]}" if found else None}
        out.append(res)
    return out
