"""Host-side preparation of the real servers and real clients of one run.

Once per machine (cached under /var/lib/ipsec-lab/services/<hash>/): the KDC database of the lab
realm and the slapd database with its base entries; building them costs a few hundred ms of
host time and nothing in the guest. Per run, in the run directory: a copy of them with this
run's probe users added (kadmin.local, slapadd: on the host, where processes are cheap), the
rendered configurations (nginx, dovecot, kdc.conf, slapd.conf, with `@ROOT@` for the guest's
tmpfs directory), the test mailboxes, and the TLS certificate of each HTTPS server.

Secrets (TLS private keys, the probe users' passwords) go only into the run's secrets file,
which the executor deletes once read; the plan carries none. Every password is fresh per run
and belongs to a throwaway account; `scrub` blanks them out of whatever the report keeps.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import hashlib
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lab.compile.plan import destination_address, source_address
from lab.contract import Plan
from lab.model.servers import proxied_client_expectation, real_services
from lab.services import templates as T
from lab.services.tls import forget, server_certificate

CACHE = Path(os.environ.get("LAB_SERVICES_CACHE", "/var/lib/ipsec-lab/services"))
CLIENT_TIMEOUT = 10.0  # as a lab probe: covers SYN retries while IKE runs
# A request a proxy forwards over a leg that IKE may still have to negotiate: the proxy's SYNs
# go out at 0, 1, 3, 7 and 15 s, so an IKE of 4 s (a loaded machine) puts the answer past 10 s
# (seen: curl timed out at 10 s while the leg itself was judged esp).
PROXIED_CLIENT_TIMEOUT = 20.0

# Which daemon listens on what (the guest waits for these before the probes).
PORTS = {"nginx": {"http": ("tcp", 80), "https": ("tcp", 443)},
         "dovecot": {"imap": ("tcp", 143), "pop3": ("tcp", 110)},
         "krb5kdc": {"kerberos": ("udp", 88), "kerberos-tcp": ("tcp", 88)},
         "slapd": {"ldap": ("tcp", 389), "gc": ("tcp", 3268)}}


def _ssha(password: str, digest=hashlib.sha1, scheme="SSHA") -> str:
    salt = secrets.token_bytes(8)
    encoded = base64.b64encode(digest(password.encode() + salt).digest() + salt).decode()
    return f"{{{scheme}}}{encoded}"


def _run(argv: list[str], env: dict | None = None, stdin: str | None = None) -> None:
    res = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False,
                         env={**os.environ, **(env or {})})
    if res.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {(res.stderr or res.stdout).strip()[-300:]}")


# ---- the cache (once per machine) ------------------------------------------------------------

def cache_key() -> str:
    recipe = T.kdc_conf("@") + T.slapd_conf("@") + T.BASE_LDIF + T.REALM
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def base_data() -> Path:
    """The cached KDC and slapd databases, built on first use (locked against parallel runs)."""
    root = CACHE / cache_key()
    if (root / "ready").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "ready").exists():
            return root
        tmp = CACHE / f".build-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for d in ("kdc", "ldap/db", "log", "run"):
            (tmp / d).mkdir(parents=True, mode=0o700)
        _kdc_files(tmp)
        (tmp / "kdc" / "kadm5.acl").write_text("")
        _run(["kdb5_util", "-r", T.REALM, "create", "-s", "-P", secrets.token_urlsafe(18)], env=_kdc_env(tmp))
        (tmp / "ldap" / "slapd.conf").write_text(T.slapd_conf(str(tmp)))
        _run(["slapadd", "-q", "-f", str(tmp / "ldap" / "slapd.conf"), "-l", "/dev/stdin"], stdin=T.BASE_LDIF)
        for f in ("kdc/kdc.conf", "kdc/krb5.conf", "ldap/slapd.conf"):
            (tmp / f).unlink()  # rendered per run with the run's paths
        shutil.rmtree(tmp / "log")
        shutil.rmtree(tmp / "run")
        (tmp / "ready").write_text(cache_key())
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    return root


def _kdc_files(root: Path) -> None:
    (root / "kdc" / "kdc.conf").write_text(T.kdc_conf(str(root)))
    (root / "kdc" / "krb5.conf").write_text(T.krb5_conf("127.0.0.1", tcp=False))


def _kdc_env(root: Path | str) -> dict:
    return {"KRB5_KDC_PROFILE": f"{root}/kdc/kdc.conf", "KRB5_CONFIG": f"{root}/kdc/krb5.conf"}


# ---- one run ---------------------------------------------------------------------------------

@dataclass
class RunServers:
    """What `prepare` produced: plan additions are made in place; secrets stay here."""

    files: dict[str, str] = field(default_factory=dict, repr=False)  # "host/rel" -> secret file text
    passwords: dict[str, str] = field(default_factory=dict, repr=False)  # probe id -> password
    wire: dict[str, list[str]] = field(default_factory=dict, repr=False)  # probe id -> forms on the wire
    seconds: float = 0.0  # host time spent preparing

    def secret(self) -> dict:
        return {"servers": {"files": dict(self.files), "passwords": dict(self.passwords)}} if (
            self.files or self.passwords) else {}

    def secret_material(self) -> list[bytes]:
        out = [v.encode() for v in self.files.values()]
        for forms in self.wire.values():
            out += [f.encode() for f in forms]
        return out

    def secrets(self) -> list[bytes]:
        """What must never appear in a report: the passwords, key files, and every wire form
        derived from a password (not a bare user name: Kerberos puts only the principal on
        the wire, and that is the probe's public marker)."""
        out = [v.encode() for v in self.passwords.values()] + [v.encode() for v in self.files.values()]
        for pid, forms in self.wire.items():
            out += [f.encode() for f in forms if not f.startswith("LABPROBE-")]
        return out

    def with_credentials(self, plan: Plan) -> Plan:
        """The classifier looks for the login as it crossed the wire: the plan with it put back,
        host side only (the plan the guest read stays as it was written)."""
        probes = [dataclasses.replace(p, credential_on_wire=self.wire[p.id][0]) if self.wire.get(p.id) else p
                  for p in plan.probes]
        out = dataclasses.replace(plan, probes=probes)
        out.freeze()
        return out

    def scrub(self, folder: str | Path) -> None:
        """Blank every password form out of the report's files, keeping lengths (pcaps stay valid)."""
        forms = [f for forms in self.wire.values() for f in forms] + list(self.passwords.values())
        needles = [f.encode() for f in forms if len(f) >= 8 and not f.startswith("LABPROBE-")]
        if not needles:
            return
        for path in Path(folder).rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                new = data
                for n in needles:
                    new = new.replace(n, b"x" * len(n))
                if new != data:
                    path.write_bytes(new)


def needed(topology) -> bool:
    return any(h.servers for h in topology.hosts) or any(e.client == "real" for e in topology.expectations)


def prepare(topology, plan: Plan, rundir: str, pki=None) -> RunServers:
    """Render every real server of `topology` into `rundir/servers/<host>/`, add `servers` to
    each host of the plan (dropping the lab listeners they replace) and `client` to each
    real-client probe. Returns the run's server secrets."""
    import time
    started = time.monotonic()
    out = RunServers()
    if not needed(topology):
        return out
    by_name = {h.name: h for h in plan.hosts}
    probes = {p.expectation: p for p in plan.probes}  # by the expectation's id, never by position
    users: dict[str, list[tuple[str, str]]] = {}  # server host -> [(user, password)]
    follow: list[tuple[str, str]] = []  # (proxied leg probe, the client probe it follows)
    for e in topology.expectations:
        p = probes.get(e.id)
        if p is None:
            continue
        if e.client == "real":
            password = "Lp" + secrets.token_urlsafe(12)  # never starts with "-" (kadmin options)
            out.passwords[p["id"]] = password
            users.setdefault(e.destination, []).append((p["marker"], password))
            if e.service.name in ("http", "https"):
                proxy = topology.host(e.destination).servers.proxy_to
                if proxy:  # the back-end checks the login the front-end forwards
                    users.setdefault(proxy, []).append((p["marker"], password))
                    p.timeout = max(p.timeout, PROXIED_CLIENT_TIMEOUT)
            p.client = _client_plan(topology, e, p, pki)
            out.wire[p["id"]] = _wire_forms(e.service.name, p["marker"], password)
            p.credential_on_wire = p.marker  # until with_credentials, host side
            p.payload = ""
        elif e.proxied_from:
            origin = proxied_client_expectation(topology, e)
            p.proxied = {"of": probes[origin.id]["id"], "log": "log/nginx-access.log"}
            p.credential_on_wire = probes[origin.id].marker
            p.payload = ""
            follow.append((p["id"], probes[origin.id]["id"]))
    for leg, origin_id in follow:  # the proxy forwards the client's Basic login as it came
        out.wire[leg] = out.wire.get(origin_id, [])[:1]
    base = None
    for host in topology.hosts:
        daemons = real_services(host)
        if not daemons:
            continue
        if base is None and {"krb5kdc", "slapd"} & set(daemons.values()):
            base = base_data()
        root = Path(rundir, "servers", host.name)
        by_name[host.name].servers = _host_servers(topology, host, daemons, root, base,
                                                       users.get(host.name, []), out, pki)
        replaced = {PORTS[d][s] for s, d in daemons.items()}
        by_name[host.name].listeners = [x for x in by_name[host.name].listeners
                                           if (x["protocol"], x["port"]) not in replaced]
    forget(topology)  # the HTTPS keys live on only in `out.files`
    out.seconds = round(time.monotonic() - started, 3)
    return out


def _wire_forms(service: str, user: str, password: str) -> list[str]:
    """How the login shows in an unprotected packet (first: what the classifier looks for).
    Kerberos sends no password: the login on the wire is the principal name (the marker)."""
    if service in ("http", "https"):
        return [base64.b64encode(f"{user}:{password}".encode()).decode(), password]
    if service in ("kerberos", "kerberos-tcp"):
        return [user]
    return [password]


def _host_servers(topology, host, daemons: dict[str, str], root: Path, base: Path | None,
                  users: list[tuple[str, str]], out: RunServers, pki) -> dict:
    for d in ("log", "run", "tmp", "state"):
        (root / d).mkdir(parents=True, exist_ok=True)
    kinds = set(daemons.values())
    run: list[dict] = []
    templates: list[str] = []
    chown: list[list[str]] = []
    names = {s for s in daemons}
    if "nginx" in kinds:
        proxy = host.servers.proxy_to
        proxy_address = str(destination_address(host, topology.host(proxy))) if proxy else None
        (root / "nginx.conf").write_text(T.nginx_conf(
            http="http" in names, https="https" in names, proxy_to=proxy_address,
            ssl_required=host.servers.ssl_required, auth=bool(users), host=host.name))
        (root / "www").mkdir(exist_ok=True)
        (root / "www" / "index.txt").write_text(f"LABOK page of {host.name} ({host.role})\n")
        (root / "htpasswd").write_text("".join(f"{u}:{_ssha(pw)}\n" for u, pw in users))
        for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (root / "tmp" / d).mkdir(exist_ok=True)
        if "https" in names:
            cert, key, _ca = server_certificate(topology, host, pki)
            (root / "tls").mkdir(exist_ok=True)
            (root / "tls" / "cert.pem").write_text(cert)
            out.files[f"{host.name}/tls/key.pem"] = key
        templates.append("nginx.conf")
        run.append({"name": "nginx", "argv": ["nginx", "-p", "@ROOT@/", "-c", "@ROOT@/nginx.conf",
                                              "-e", "@ROOT@/log/nginx-error.log"], "env": {}})
    if "dovecot" in kinds:
        (root / "dovecot.conf").write_text(T.dovecot_conf(host.name))
        (root / "dovecot-users").write_text("".join(
            f"{u}:{_ssha(pw, hashlib.sha256, 'SSHA256')}\n" for u, pw in users))
        for u, _ in users:  # the test mailbox: one message in each probe user's INBOX
            new = root / "mail" / u / "new"
            for d in ("new", "cur", "tmp"):
                (new.parent / d).mkdir(parents=True, exist_ok=True)
            (new / f"1.lab.{host.name}").write_text(T.mailbox_message(host.name, u))
        (root / "mail").mkdir(exist_ok=True)
        templates.append("dovecot.conf")
        chown.append(["mail", "mail"])
        run.append({"name": "dovecot", "argv": ["dovecot", "-F", "-c", "@ROOT@/dovecot.conf"], "env": {}})
    if "krb5kdc" in kinds:
        shutil.copytree(base / "kdc", root / "kdc")
        _kdc_files(root)
        principals = "".join(f"addprinc -pw {pw} {u}\n" for u, pw in users)
        if principals:  # on the host: one kadmin.local for every probe user of the run
            _run(["kadmin.local", "-r", T.REALM], env=_kdc_env(root), stdin=principals)
        (root / "kdc" / "kdc.conf").write_text(T.kdc_conf("@ROOT@"))
        (root / "kdc" / "krb5.conf").write_text(T.krb5_conf("127.0.0.1", tcp=False))
        templates += ["kdc/kdc.conf"]
        run.append({"name": "krb5kdc", "argv": ["krb5kdc", "-n", "-r", T.REALM, "-P", "@ROOT@/run/krb5kdc.pid"],
                    "env": {"KRB5_KDC_PROFILE": "@ROOT@/kdc/kdc.conf", "KRB5_CONFIG": "@ROOT@/kdc/krb5.conf"}})
    if "slapd" in kinds:
        (root / "ldap").mkdir(exist_ok=True)
        shutil.copytree(base / "ldap" / "db", root / "ldap" / "db")
        (root / "ldap" / "slapd.conf").write_text(T.slapd_conf(str(root)))
        ldif = "".join(T.user_ldif(u, _ssha(pw)) for u, pw in users)
        if ldif:
            _run(["slapadd", "-q", "-f", str(root / "ldap" / "slapd.conf"), "-l", "/dev/stdin"], stdin=ldif)
        (root / "ldap" / "slapd.conf").write_text(T.slapd_conf("@ROOT@"))
        templates.append("ldap/slapd.conf")
        urls = " ".join(f"ldap://0.0.0.0:{PORTS['slapd'][s][1]}/" for s in ("ldap", "gc"))
        run.append({"name": "slapd", "argv": ["slapd", "-d", "stats", "-f", "@ROOT@/ldap/slapd.conf", "-h", urls],
                    "env": {}})
    ports = sorted({PORTS[d][s] for s, d in daemons.items()})
    return {"dir": str(root), "daemons": run, "templates": templates, "chown": chown,
            "secret_files": sorted(k.split("/", 1)[1] for k in out.files if k.startswith(host.name + "/")),
            "ports": [list(p) for p in ports]}


def _client_plan(topology, e, p: dict, pki) -> dict:
    """What the guest runs for one real-client probe (no password: it comes from the secrets)."""
    src, dst = topology.host(e.source), topology.host(e.destination)
    address = str(destination_address(src, dst))
    kind, marker = e.service.name, p["marker"]
    if kind in ("http", "https"):
        scheme = "https" if kind == "https" else "http"
        files = {}
        argv = ["curl", "-sS", "-K", "@DIR@/login", "--max-time", str(p.get("timeout", CLIENT_TIMEOUT) - 0.5),
                "--interface", p["src_address"], "-o", "@DIR@/body", "-w", "%{http_code} %{local_port}",
                f"{scheme}://{address}/{marker}"]
        if kind == "https":
            _cert, _key, ca = server_certificate(topology, dst, pki, public_only=True)
            files["ca.pem"] = ca
            argv[1:1] = ["--cacert", "@DIR@/ca.pem"]
        return {"kind": "curl", "argv": argv, "files": files, "user": marker, "expect": "LABOK",
                "refused_status": 403}
    if kind in ("imap", "pop3"):
        return {"kind": kind, "address": address, "port": e.service.port, "user": marker}
    if kind in ("kerberos", "kerberos-tcp"):
        tcp = kind == "kerberos-tcp"
        return {"kind": "kinit", "argv": ["kinit", f"{marker}@{T.REALM}"],
                "env": {"KRB5_CONFIG": "@DIR@/krb5.conf", "KRB5CCNAME": "FILE:@DIR@/ccache"},
                "files": {"krb5.conf": T.krb5_conf(address, tcp=tcp)}, "user": marker}
    if kind in ("ldap", "gc"):
        return {"kind": "ldapsearch", "argv": [
            "ldapsearch", "-x", "-LLL", "-o", "nettimeout=8", "-H", f"ldap://{address}:{e.service.port}",
            "-D", f"uid={marker},{T.PEOPLE}", "-y", "@DIR@/password", "-b", T.LDAP_SUFFIX,
            f"(uid={marker})", "uid"], "env": {}, "files": {}, "user": marker,
            "expect": f"uid: {marker}"}
    raise ValueError(kind)


__all__ = ["RunServers", "base_data", "needed", "prepare", "source_address"]
