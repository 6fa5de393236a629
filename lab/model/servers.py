"""Real servers on hosts and real clients in expectations (issue 4: the real parts, B12).

`servers: real` on a host puts Debian's daemons behind the services it declares: nginx for http
and https, dovecot for pop3 and imap, MIT krb5kdc for kerberos (udp and tcp 88), slapd for ldap
and gc (389, 3268). Other services keep the lab's own listener. A mapping says more:
`servers: {proxy_to: be, ssl: required}` makes nginx a reverse proxy to `be`'s port 80 (as an
Exchange front-end), and with `ssl: required` plain HTTP is refused (403, as IIS "Require SSL").

`client: real` on an expectation sends a real client (curl, an IMAP or POP3 login, kinit,
ldapsearch) to a real server; `proxied_from: client` names the leg a proxy sends to the
back-end on behalf of that host's real-client request, judged from the wire like any flow.
"""

from __future__ import annotations

from dataclasses import replace

from lab.model.raw import Reader, as_list, as_map
from lab.model.topology import RealServers

# Which daemon answers which service on a host with `servers: real`.
REAL_SERVERS = {"http": "nginx", "https": "nginx", "pop3": "dovecot", "imap": "dovecot",
                "kerberos": "krb5kdc", "kerberos-tcp": "krb5kdc", "ldap": "slapd", "gc": "slapd"}
# Which real client speaks which service.
REAL_CLIENTS = {"http": "curl", "https": "curl", "pop3": "poplib", "imap": "imaplib",
                "kerberos": "kinit", "kerberos-tcp": "kinit", "ldap": "ldapsearch", "gc": "ldapsearch"}


class ServerReader(Reader):
    """Reads `servers:` on hosts (after the hosts are built) and checks real-client expectations."""

    def read_servers(self) -> None:
        for name, spec in self.raw_hosts.items():
            raw = as_map(spec).get("servers") if isinstance(spec, dict) else None
            if raw in (None, "lab") or name not in self.hosts:
                continue
            path, host = ("hosts", name, "servers"), self.hosts[name]
            spec = as_map(raw)
            proxy = spec.get("proxy_to")
            if isinstance(proxy, str):
                if proxy not in self.raw_hosts:
                    self.no_host(path + ("proxy_to",), proxy)
                elif proxy == name:
                    self.error(path + ("proxy_to",), "a proxy cannot forward to itself")
            real = [s.name for s in host.services if s.name in REAL_SERVERS]
            if not real:
                self.error(path, f"{name} declares no service a real server backs; real servers "
                           f"answer {', '.join(sorted(REAL_SERVERS))}")
            ssl = spec.get("ssl") == "required"
            if ssl and "https" not in real:
                self.error(path + ("ssl",), f"ssl: required needs https in {name}'s services")
            self.hosts[name] = replace(host, servers=RealServers(
                proxy_to=proxy if isinstance(proxy, str) else None, ssl_required=ssl))

    def check_real_clients(self, raw: list) -> None:
        for i, spec in enumerate(raw):
            spec = as_map(spec)
            src, dst, service = spec.get("from"), spec.get("to"), spec.get("service")
            if not all(isinstance(x, str) for x in (src, dst, service)):
                continue
            path = ("expect", i)
            target = self.hosts.get(dst)
            if spec.get("client") == "real":
                if dst in self.raw_clusters:
                    self.error(path + ("client",), f"{dst} is a cluster: its nodes answer with the "
                               "lab's listener, not real servers; remove client: real")
                elif service not in REAL_CLIENTS:
                    self.error(path + ("client",), f"no real client for {service!r}; real "
                               f"clients speak {', '.join(sorted(REAL_CLIENTS))}")
                elif target is not None and (target.servers is None or
                                             service not in {s.name for s in target.services}):
                    self.error(path + ("client",), f"a real client needs a real server: give "
                               f"{dst} `servers: real` and {service} in its services")
            origin = spec.get("proxied_from")
            if isinstance(origin, str):
                self._check_proxied(path, src, dst, service, origin, raw)

    def _check_proxied(self, path, src: str, dst: str, service: str, origin: str, raw: list) -> None:
        proxy = self.hosts.get(src)
        if origin not in self.raw_hosts:
            self.no_host(path + ("proxied_from",), origin)
            return
        if proxy is None or proxy.servers is None or proxy.servers.proxy_to != dst:
            self.error(path + ("proxied_from",), f"{src} does not proxy to {dst}: give {src} "
                       f"`servers: {{proxy_to: {dst}}}`")
        elif service != "http":
            self.error(path + ("service",), "the proxy forwards over http (port 80)")
        if not any(as_map(e).get("from") == origin and as_map(e).get("to") == src
                   and as_map(e).get("client") == "real" and as_map(e).get("service") in ("http", "https")
                   for e in raw):
            self.error(path + ("proxied_from",), f"no real-client http or https expectation from "
                       f"{origin} to {src} to follow")


def real_services(host) -> dict[str, str]:
    """Service name -> daemon, for the services a host's real servers answer."""
    if host.servers is None:
        return {}
    return {s.name: REAL_SERVERS[s.name] for s in host.services if s.name in REAL_SERVERS}


def proxied_client_expectation(topology, exp):
    """The real-client expectation whose request the proxy leg `exp` carries."""
    for e in topology.expectations:
        if e.source == exp.proxied_from and e.destination == exp.source and e.client == "real" \
                and e.service.name in ("http", "https"):
            return e
    return None


__all__ = ["REAL_CLIENTS", "REAL_SERVERS", "ServerReader", "as_list", "proxied_client_expectation",
           "real_services"]
