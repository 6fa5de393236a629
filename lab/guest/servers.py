"""Real servers inside the lab kernel: nginx, dovecot, krb5kdc, slapd in their hosts' namespaces.

The host rendered everything (lab.services); here each host's directory is copied to the
guest's tmpfs (`@ROOT@` becomes that directory), the secret files (TLS keys) are written 0600
from the secrets the executor read, and every daemon is started at once, in the foreground, in
its host's namespace (a child forked while the thread is inside it). `wait` polls the
namespace's socket tables until every port listens; `stop` ends each daemon by its PID.
Standard library only: the guest is slow.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time

from lab.guest.netns import inside


class Servers:
    def __init__(self, workdir: str, secret_files: dict[str, str] | None = None):
        self.root = os.path.join(workdir, "servers")
        self.on_host = None  # (host, argv) -> the argv that runs it on that host (lab.guest.backends)
        self.secret_files = secret_files or {}  # "host/rel" -> text
        self.procs: list[tuple[str, str, subprocess.Popen]] = []  # (host, daemon, process)
        self.pending: list[tuple[dict, str, list]] = []  # (host, root, ports) still to come up
        self.started_at = None

    def start(self, hosts: list[dict]) -> list[str]:
        self.started_at = time.monotonic()
        started = []
        for h in hosts:
            spec = h.get("servers")
            if not spec:
                continue
            root = os.path.join(self.root, h["name"])
            shutil.copytree(spec["dir"], root, dirs_exist_ok=True)  # a container may have it mounted
            for rel in spec["templates"]:
                path = os.path.join(root, rel)
                with open(path) as f:
                    text = f.read().replace("@ROOT@", root)
                with open(path, "w") as f:
                    f.write(text)
            for rel in spec.get("secret_files", []):
                path = os.path.join(root, rel)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(self.secret_files.pop(f"{h['name']}/{rel}"))
            for rel, user in spec.get("chown", []):
                pw = pwd.getpwnam(user)
                for dirpath, _dirs, files in os.walk(os.path.join(root, rel)):
                    for name in [dirpath] + [os.path.join(dirpath, f) for f in files]:
                        os.chown(name, pw.pw_uid, pw.pw_gid)
            for d in spec["daemons"]:
                argv = [a.replace("@ROOT@", root) for a in d["argv"]]
                if self.on_host:
                    argv = self.on_host(h["name"], argv)
                env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                       **{k: v.replace("@ROOT@", root) for k, v in d["env"].items()}}
                log = open(os.path.join(root, "log", f"{d['name']}.out"), "w")  # noqa: SIM115  (closed once the child has it)
                with inside(h["ns"]):  # the child is forked in the host's namespace
                    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
                log.close()
                self.procs.append((h["name"], d["name"], proc))
                started.append(f"{d['name']} on {h['name']}")
            self.pending.append((h, root, spec["ports"]))
        return started

    def wait(self, deadline: float) -> float:
        """Until every real server's ports listen; returns the seconds since start."""
        for h, _root, ports in self.pending:
            want = {(p, port) for p, port in ports}
            while True:
                dead = [(n, d) for n, d, pr in self.procs if n == h["name"] and pr.poll() is not None]
                if dead:
                    raise RuntimeError(f"{dead[0][1]} on {dead[0][0]} exited at start; see its log")
                if want <= _listening(h["ns"]):
                    break
                if time.monotonic() > deadline:
                    missing = ", ".join(f"{p}/{n}" for p, n in sorted(want - _listening(h["ns"])))
                    raise RuntimeError(f"real servers on {h['name']} not listening on {missing}")
                time.sleep(0.05)
        self.pending = []
        return round(time.monotonic() - (self.started_at or time.monotonic()), 3)

    def log(self, host: str, rel: str) -> str:
        try:
            with open(os.path.join(self.root, host, rel), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, logs_dir: str | None = None) -> None:
        for _h, _d, proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)  # the daemon and its workers, by PID
                except ProcessLookupError:
                    pass
        end = time.monotonic() + 3
        for _h, _d, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if logs_dir:  # daemons' logs into the report (no secrets: the host scrubs them again)
            os.makedirs(logs_dir, exist_ok=True)
            for host in sorted({h for h, _d, _p in self.procs}):
                folder = os.path.join(self.root, host, "log")
                for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                    shutil.copy(os.path.join(folder, name), os.path.join(logs_dir, f"{host}-{name}"))
        self.procs = []


def _listening(ns: str) -> set[tuple[str, int]]:
    """(protocol, port) of the namespace's listening TCP and bound UDP sockets."""
    out = set()
    with inside(ns):
        for proto, path, state in (("tcp", "tcp", "0A"), ("udp", "udp", "07")):
            with open(f"/proc/thread-self/net/{path}") as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    if cols[3] == state:
                        out.add((proto, int(cols[1].rsplit(":", 1)[1], 16)))
    return out
