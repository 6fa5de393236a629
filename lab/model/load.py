"""Load a topology file: YAML -> schema check -> semantic checks -> resolved model.

Every problem becomes one line `FILE:LINE: FIELD.PATH: message`, and all of them are
reported at once (TopologyError), so a designer can fix a file in one pass. The words for
YAML and schema errors are in lab.model.errors_text.
"""

from __future__ import annotations

import ipaddress
import json
import math
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, validators
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from lab.errors import TopologyError
from lab.model.builtins import BUILTIN_POLICIES
from lab.model.clusters import ClusterReader
from lab.model.errors_text import (
    Doc,
    Loc,
    field_name,
    in_line_order,
    reader_problem,
    schema_problems,
    yaml_problem,
)
from lab.model.firewall import FirewallReader
from lab.model.flows import kerberos_inside_ipsec
from lab.model.policies import PolicyReader
from lab.model.servers import ServerReader
from lab.model.raw import as_int, as_ipv4, as_list, as_map, as_str, as_subnet, as_text, parse
from lab.model.services import parse_service
from lab.model.yaml_read import load_yaml
from lab.model.topology import (
    Expectation,
    Host,
    IkeMethod,
    Interface,
    IPv4Address,
    Network,
    Policy,
    Result,
    Service,
    Topology,
)

SCHEMA: dict = json.loads(Path(__file__).with_name("schema.json").read_text(encoding="utf-8"))

_FORMATS = FormatChecker(["ipv4"])


@_FORMATS.checks("ipv4-network", raises=ValueError)
def _is_subnet(text: object) -> bool:
    # A subnet must be written as its network address: host bits set is almost always a typo.
    return not isinstance(text, str) or "/" in text and bool(ipaddress.IPv4Network(text))


def _is_integer(checker: object, value: object) -> bool:
    # JSON Schema counts 80.0 as an integer; the loader would then drop it and a rule would
    # widen to every port. A whole number is written without a decimal point.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(checker: object, value: object) -> bool:
    # YAML's .nan and .inf are floats; no timer, rate or scale means them.
    return _is_integer(checker, value) or isinstance(value, float) and math.isfinite(value)


_STRICT = Draft202012Validator.TYPE_CHECKER.redefine_many(
    {"integer": _is_integer, "number": _is_number})
_VALIDATOR = validators.extend(Draft202012Validator, type_checker=_STRICT)(
    SCHEMA, format_checker=_FORMATS)

_EXEMPTIONS = {"windows-2000": 0, "windows-2003": 3}  # NoDefaultExempt, as each release ships


# One `lab verify` reads its topology three times (the lint, the run, the report's picture), at
# 0.1 s each; the model is immutable (frozen dataclasses), so a file read again unchanged is
# the same model. Keyed by the file's text: an edited file is read anew.
_LOADED: dict[tuple[str, str], Topology] = {}


def load_topology(path: str | Path) -> Topology:
    """Read, validate and resolve a topology file. Raises TopologyError listing every problem."""
    text = _read_text(path)
    key = (str(path), text)  # the model records the path as given
    if key not in _LOADED:
        if len(_LOADED) >= 16:  # a test session reads hundreds of files: keep the last few
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = _load(path, text)
    return _LOADED[key]


def _load(path: str | Path, text: str) -> Topology:
    doc = Doc(str(path), _parse_yaml(path, text))
    builder = _Builder(doc)
    topology = builder.build()
    # One list in line order; on one line the schema's problems first (a semantic problem
    # there is often a consequence of a wrong value).
    found = [sorted(schema_problems(doc, _VALIDATOR.iter_errors(doc.data)), key=lambda p: p[:2]),
             sorted(builder.problems, key=lambda p: p[:2])]
    problems = in_line_order([p for group in found for p in group], by_line_only=True)
    if problems:
        raise TopologyError(problems)
    return topology


def _read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as e:
        why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else e.strerror
        raise TopologyError([f"{path}: cannot read: {why}"]) from None


def _parse_yaml(path: str | Path, text: str) -> Any:
    try:
        with warnings.catch_warnings():  # a warning would print lines without FILE:LINE
            warnings.simplefilter("ignore")
            data = load_yaml(text)
    except MarkedYAMLError as e:
        raise TopologyError([yaml_problem(str(path), e)]) from None
    except ReaderError as e:
        raise TopologyError([reader_problem(str(path), text, e)]) from None
    except YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "cannot parse"
        raise TopologyError([f"{path}:1: invalid YAML: {first}"]) from None
    if data is None:
        empty = f"{path}:1: the file is empty; a topology needs name, networks and hosts"
        raise TopologyError([empty])
    return data


# ---- semantic checks and the model ---------------------------------------------------------

_AUTH_UNSUPPORTED = {
    "kerberos": "strongSwan cannot authenticate IKE with Kerberos; use certificates or psk",
}


class _Builder(ClusterReader, PolicyReader, FirewallReader, ServerReader):
    """Checks what the schema cannot (cross-references, addresses) and builds the model.

    Works on a file that may have failed the schema: anything of the wrong type is skipped
    here, because the schema has already reported it. Values become plain Python types.
    """

    def build(self) -> Topology:
        raw, ike = self.raw, as_map(self.raw.get("ike"))
        networks = self._networks(as_map(raw.get("networks")))
        used = self._hosts(networks, _exemptions(raw.get("exemptions"), 3))
        self.read_clusters(networks, used)
        self.read_firewalls()
        self.read_servers()
        nat = self.read_nat(networks)
        policies = self.policies(as_map(raw.get("policies")))
        self._check_host_policies()
        self._check_authentication({**policies, **BUILTIN_POLICIES})
        self._certificates()
        return Topology(
            name=str(raw.get("name")),
            description=str(raw.get("description", "")),
            path=self.doc.file,
            ike_version=int(ike.get("version", 2)) if ike.get("version", 2) in (1, 2) else 2,
            auth_method=str(as_map(raw.get("authentication")).get("method", "psk")),
            networks=tuple(networks.values()),
            hosts=tuple(self.hosts.values()),
            policies=tuple(policies.values()) + tuple(BUILTIN_POLICIES.values()),
            expectations=self._expectations(as_list(raw.get("expect"))),
            ike_methods=tuple(m for m in map(_ike_method, as_list(ike.get("methods"))) if m),
            ike_lifetime_minutes=as_int(ike.get("lifetime_minutes")),
            clusters=tuple(self.clusters.values()),
            failovers=self.failovers(as_list(raw.get("failover"))),
            nat=nat,
        )

    def _check_authentication(self, policies: dict[str, Policy]) -> None:
        method = as_map(self.raw.get("authentication")).get("method")
        path = ("authentication", "method")
        if isinstance(method, str) and method in _AUTH_UNSUPPORTED:
            self.error(path, _AUTH_UNSUPPORTED[method])
        if method != "kerberos":
            return
        for host in self.hosts.values():
            found = kerberos_inside_ipsec(host, policies.get(str(host.policy)), self.hosts)
            if found:
                dc, policy, rule = found
                self.error(path, "deadlock: IKE would authenticate with Kerberos, but Kerberos "
                           f"traffic from {host.name} to {dc.name} is itself inside IPsec (rule "
                           f"{policy.name}.{rule.name}); exempt Kerberos (exemptions: "
                           "windows-2000) or use certificates or psk")
                return  # one deadlock makes the point

    def _certificates(self) -> None:
        """Each IPsec host's machine certificate: as written, else valid; `none` without a policy."""
        method = as_map(self.raw.get("authentication")).get("method", "psk")
        for name, host in list(self.hosts.items()):
            written = as_map(self.raw_hosts.get(name)).get("certificate")
            path = ("hosts", name, "certificate")
            if written is not None and method != "certificates":
                self.error(path, f"machine certificates need authentication: {{method: "
                           f"certificates}} (this topology uses {method})")
            elif written is not None and not host.policy:
                self.error(path, f"{name} has no policy, so it speaks no IPsec and needs no "
                           "machine certificate; add a policy or remove certificate")
            state = written if written in ("valid", "revoked", "none") else "valid"
            self.hosts[name] = replace(host, certificate=state if host.policy else "none")

    def _networks(self, raw: dict) -> dict[str, Network]:
        subnets = {name: as_subnet(text) for name, text in raw.items()}
        networks = {name: Network(str(name), net) for name, net in subnets.items() if net}
        self._check_overlaps(list(networks.values()))
        return networks

    def _check_overlaps(self, networks: list[Network]) -> None:
        """Two networks sharing addresses could not be told apart by routes or filters.
        Sorted by address, each overlaps the widest one before it, if any: n log n, not n^2."""
        order = {n.name: i for i, n in enumerate(networks)}
        widest: Network | None = None
        for net in sorted(networks, key=lambda n: (n.subnet.network_address, n.subnet.prefixlen)):
            if widest and net.subnet.network_address <= widest.subnet.broadcast_address:
                first, later = sorted((widest, net), key=lambda n: order[n.name])
                line = self.doc.line(("networks", first.name))
                self.error(("networks", later.name), f"{later.subnet} overlaps network "
                           f"{first.name} ({first.subnet}, line {line})")
            if not widest or net.subnet.broadcast_address > widest.subnet.broadcast_address:
                widest = net

    # hosts

    def _hosts(self, networks: dict[str, Network], exemptions: int) -> dict[IPv4Address, Loc]:
        """Build self.hosts; returns each address and where it was first given."""
        used: dict[IPv4Address, Loc] = {}
        for name, spec in self.raw_hosts.items():
            if name in ("me", "any"):  # filters could not tell the host from the keyword
                self.error(("hosts", name), f"{name!r} is a filter keyword; choose another name")
            if isinstance(spec, dict):
                path, interfaces = ("hosts", name), as_map(spec.get("interfaces"))
                services = spec.get("services")
                self.hosts[name] = Host(
                    name=str(name),
                    role=str(spec.get("role")),
                    interfaces=self._interfaces(path, interfaces, networks, used),
                    gateway=as_text(spec.get("gateway")),
                    policy=as_text(spec.get("policy")),
                    services=self.read_services(path + ("services",), as_list(services)),
                    exemptions=_exemptions(spec.get("exemptions"), exemptions),
                    cluster=as_str(spec.get("cluster")),
                )
        for name, spec in self.raw_hosts.items():
            self._check_gateway(name, as_map(spec).get("gateway"))
        return used

    def _interfaces(self, path: Loc, raw: dict, networks: dict[str, Network],
                    used: dict) -> tuple[Interface, ...]:
        out = []
        known = as_map(self.raw.get("networks"))
        for net_name, text in raw.items():
            p = path + ("interfaces", net_name)
            if net_name not in known:
                self.error(p, f"no network {str(net_name)!r}; networks are "
                           f"{', '.join(map(str, known)) or 'none'}")
            address = as_ipv4(text)
            if address is None:
                continue
            if net_name in networks:
                self.check_address(p, address, networks[net_name])
            if address in used:
                self.error(p, f"{address} is already used by {field_name(used[address])} "
                           f"(line {self.doc.line(used[address])})")
            used.setdefault(address, p)
            out.append(Interface(str(net_name), address))
        return tuple(out)

    def _check_gateway(self, name: str, gateway: object) -> None:
        if not isinstance(gateway, str):
            return
        path = ("hosts", name, "gateway")
        if gateway == name:
            self.error(path, "a host cannot be its own gateway")
        elif gateway not in self.raw_hosts:
            self.no_host(path, gateway)
        elif not self._shared_networks(name, gateway):
            self.error(path, f"host {gateway!r} shares no network with {name!r}")
        elif name in self.hosts and gateway in self.hosts and not self.hosts[gateway].forwards:
            self.error(path, f"{gateway!r} is on one network only, so it routes nothing; a "
                       "gateway needs an interface on each network it joins")
        elif loop := self._gateway_loop(name):
            # said once, at the loop's last host in the file
            if name == max(loop, key=lambda h: self.doc.line(("hosts", h))):
                self.error(path, f"gateways form a loop ({' -> '.join([*loop, loop[0]])}); "
                           "packets would circle between them")

    def _gateway_loop(self, name: str) -> list[str]:
        """The hosts on a gateway loop through `name`, from `name`; empty when there is none."""
        chain = [name]
        while True:
            nxt = as_map(self.raw_hosts.get(chain[-1])).get("gateway")
            if not isinstance(nxt, str) or nxt not in self.raw_hosts or nxt == chain[-1]:
                return []
            if nxt == name:
                return chain
            if nxt in chain:  # a loop further on, not through `name`
                return []
            chain.append(nxt)

    def _shared_networks(self, a: str, b: str) -> set:
        """Networks both are on; a cluster is on its VIP's network."""
        return self._networks_of(a) & self._networks_of(b)

    def _networks_of(self, name: str) -> set:
        if name in self.clusters:
            return {self.clusters[name].network}
        return set(as_map(as_map(self.raw_hosts.get(name)).get("interfaces")))

    def _check_host_policies(self) -> None:
        for name, spec in self.raw_hosts.items():
            self.check_policy(("hosts", name, "policy"), as_map(spec).get("policy"))
        for host in self.hosts.values():
            self._check_rules_of(host)

    def _check_rules_of(self, host: Host) -> None:
        """A rule of the host's own policy may not lead back to the host itself."""
        raw = as_map(as_map(self.raw.get("policies")).get(host.policy))
        for i, rule in enumerate(map(as_map, as_list(raw.get("rules")))):
            path = ("policies", str(host.policy), "rules", i)
            if rule.get("tunnel") == host.name:
                self.error(path + ("tunnel",), f"{host.name} applies policy {host.policy}, so "
                           "this tunnel would end at itself; name the host at the far end")
            spec = as_map(rule.get("filter"))
            for side in ("from", "to"):
                end = spec.get(side)
                who = (f"{end} applies policy {host.policy} itself" if end == host.name else
                       f"{end} is {host.name}'s own address, and {host.name} applies policy "
                       f"{host.policy}" if as_ipv4(end) in host.addresses else "")
                if who:
                    self.error(path + ("filter", side), f"{who}; write me for it, and a peer "
                               "on the other side")

    # expectations

    def _expectations(self, raw: list) -> tuple[Expectation, ...]:
        self.check_real_clients(raw)
        out, seen = [], {}
        for i, spec in enumerate(raw):
            if isinstance(spec, dict) and (exp := self._expectation(("expect", i), spec)):
                key = (exp.source, exp.destination, exp.service.protocol, exp.service.port,
                       exp.via, exp.tamper, exp.proxied_from, exp.bulk_kilobytes)
                if key in seen:
                    how = (f" via {exp.via}" if exp.via != "unicast" else "") + (
                        " with tamper" if exp.tamper else "")
                    self.error(("expect", i), f"duplicate expectation {exp.source} -> "
                               f"{exp.destination} {exp.service}{how} (first at line {seen[key]})")
                seen.setdefault(key, exp.where.line)
                out.append(exp)
        return tuple(out)

    def _expectation(self, path: Loc, spec: dict) -> Expectation | None:
        ends = [spec.get("from"), spec.get("to")]
        ok = all(isinstance(h, str) for h in ends)
        for key, end in zip(("from", "to"), ends):
            if not isinstance(end, str) or end in self.raw_hosts:
                continue
            ok = ok and key == "to" and end in self.clusters
            if key == "from" and end in self.raw_clusters:
                self.error(path + (key,), f"{end!r} is a cluster; an expectation goes from a "
                           "host (to: may name a cluster, meaning its VIP)")
            elif key == "to" and end in self.clusters and ends[0] in self.clusters[end].nodes:
                self.error(path + (key,), f"{ends[0]!r} is a node of cluster {end!r}; expect "
                           "traffic to its VIP from a host outside the cluster")
                ok = False
            elif end not in self.raw_clusters:
                self.no_host(path + (key,), end, or_cluster=key == "to")
        if ok and ends[0] == ends[1]:
            self.error(path + ("to",), f"from and to are the same host {ends[0]!r}")
        service = None
        if isinstance(spec.get("service"), str):
            try:
                service = parse_service(spec["service"])
            except ValueError as e:
                self.error(path + ("service",), str(e))
        result = parse(Result, spec.get("result"))
        via = str(spec.get("via", "unicast"))
        tamper = spec.get("tamper") is True
        bulk = spec.get("bulk") if isinstance(spec.get("bulk"), int) and not isinstance(spec.get("bulk"), bool) else 0
        if bulk and service and service.protocol != "tcp":
            self.error(path + ("bulk",), f"bulk needs a tcp service (got {service.name!r})")
        if ok and service:
            self._check_delivery(path, str(ends[0]), str(ends[1]), service, via, tamper)
        if not ok or service is None or result is None:
            return None
        behaviour = spec.get("behaviour")
        behaviours = [behaviour] if isinstance(behaviour, str) else as_list(behaviour)
        return Expectation(
            str(ends[0]), str(ends[1]), service, result, self.doc.where(path),
            ike=as_text(spec.get("ike")) if spec.get("ike") in ("established", "failed") else None,
            via=via if via in ("broadcast", "multicast") else "unicast",
            tamper=tamper,
            behaviours=tuple(str(b) for b in behaviours if isinstance(b, str)),
            client="real" if spec.get("client") == "real" else "lab",
            proxied_from=as_text(spec.get("proxied_from")),
            bulk_kilobytes=bulk,
        )

    def _check_delivery(self, path: Loc, src: str, dst: str, service: Service, via: str,
                        tamper: bool) -> None:
        """`via` needs one shared network; `tamper` needs a router in between."""
        shared = self._shared_networks(src, dst)
        if via in ("broadcast", "multicast"):
            if dst in self.clusters:
                self.error(path + ("via",), f"{via} goes to a whole network, not to cluster "
                           f"{dst}'s VIP; use unicast")
            elif service.protocol != "udp":
                self.error(path + ("via",), f"{via} needs a udp service like udp/9999 "
                           f"(got {service.name!r})")
            elif not shared:
                self.error(path + ("via",), f"{via} needs {src} and {dst} on one shared "
                           "network; routers do not forward it")
        if not tamper:
            return
        gateway = self.hosts.get(as_text(as_map(self.raw_hosts.get(src)).get("gateway")) or "")
        if service.protocol not in ("tcp", "udp"):
            self.error(path + ("tamper",), f"tamper needs a tcp or udp service "
                       f"(got {service.name!r})")
        elif shared or gateway is None or not gateway.forwards:
            self.error(path + ("tamper",), f"tamper needs a router between {src} and {dst} "
                       "(the source's gateway alters packets in flight)")


def _exemptions(value: object, default: int) -> int:
    if isinstance(value, str):
        return _EXEMPTIONS.get(value, default)
    number = as_int(value)
    return number if number in (0, 1, 2, 3) else default


def _ike_method(raw: object) -> IkeMethod | None:
    spec = as_map(raw)
    encryption, integrity = spec.get("encryption"), spec.get("integrity")
    group = as_int(spec.get("dh_group"))
    if isinstance(encryption, str) and isinstance(integrity, str) and group is not None:
        return IkeMethod(str(encryption), str(integrity), group)
    return None
