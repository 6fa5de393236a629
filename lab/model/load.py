"""Load a topology file: YAML -> schema check -> semantic checks -> resolved model.

Every problem becomes one line `FILE:LINE: FIELD.PATH: message`, and all of them are
reported at once (TopologyError), so a designer can fix a file in one pass. The words for
YAML and schema errors are in lab.model.errors_text.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from lab.errors import TopologyError
from lab.model.builtins import BUILTIN_POLICIES
from lab.model.errors_text import (
    Doc,
    Loc,
    bad_subnet,
    field_name,
    in_line_order,
    schema_problems,
    suggest,
    yaml_problem,
)
from lab.model.services import parse_service
from lab.model.topology import (
    Action,
    Endpoint,
    Expectation,
    Filter,
    Host,
    Interface,
    IPv4Address,
    IPv4Network,
    Network,
    Policy,
    Result,
    Rule,
    Security,
    Service,
    Topology,
)

SCHEMA: dict = json.loads(Path(__file__).with_name("schema.json").read_text(encoding="utf-8"))

_FORMATS = FormatChecker(["ipv4"])


@_FORMATS.checks("ipv4-network", raises=ValueError)
def _is_subnet(text: object) -> bool:
    # A subnet must be written as its network address: host bits set is almost always a typo.
    return not isinstance(text, str) or "/" in text and bool(ipaddress.IPv4Network(text))


_VALIDATOR = Draft202012Validator(SCHEMA, format_checker=_FORMATS)

def load_topology(path: str | Path) -> Topology:
    """Read, validate and resolve a topology file. Raises TopologyError listing every problem."""
    doc = Doc(str(path), _read_yaml(path))
    problems = in_line_order(schema_problems(doc, _VALIDATOR.iter_errors(doc.data)))
    builder = _Builder(doc)
    topology = builder.build()
    problems += [p for p in in_line_order(builder.problems) if p not in problems]
    if problems:
        raise TopologyError(problems)
    return topology


# ---- reading ---------------------------------------------------------------------------------


def _read_yaml(path: str | Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as e:
        why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else e.strerror
        raise TopologyError([f"{path}: cannot read: {why}"]) from None
    try:
        data = YAML(typ="rt").load(text)
    except MarkedYAMLError as e:
        raise TopologyError([yaml_problem(str(path), e)]) from None
    except YAMLError as e:
        raise TopologyError([f"{path}:1: invalid YAML: {e}"]) from None
    if data is None:
        empty = f"{path}:1: the file is empty; a topology needs name, networks and hosts"
        raise TopologyError([empty])
    return data


# ---- semantic checks and the model ---------------------------------------------------------


def _map(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _parse(kind: type, value: object) -> Any:
    """kind(value), or None when the value is not one (the schema reports why)."""
    try:
        return kind(value)
    except (ValueError, TypeError):
        return None


def _ipv4(text: object) -> IPv4Address | None:
    return _parse(IPv4Address, text) if isinstance(text, str) else None


def _subnet(text: object) -> IPv4Network | None:
    return _parse(IPv4Network, text) if isinstance(text, str) and "/" in text else None


_AUTH_UNSUPPORTED = {
    "certificates": "'certificates' is not implemented yet; use psk",
    "kerberos": "strongSwan cannot authenticate IKE with Kerberos; use certificates or psk",
}


class _Builder:
    """Checks what the schema cannot (cross-references, addresses) and builds the model.

    Works on a file that may have failed the schema: anything of the wrong type is skipped
    here, because the schema has already reported it.
    """

    def __init__(self, doc: Doc):
        self.doc = doc
        self.problems: list[tuple[int, str, str]] = []
        self.raw = _map(doc.data)
        self.raw_hosts = _map(self.raw.get("hosts"))
        self.hosts: dict[str, Host] = {}

    def error(self, path: Loc, message: str) -> None:
        self.problems.append(self.doc.problem(path, message))

    def build(self) -> Topology:
        raw = self.raw
        self._check_authentication(_map(raw.get("authentication")).get("method", "psk"))
        networks = self._networks(_map(raw.get("networks")))
        self._hosts(networks)
        policies = self._policies(_map(raw.get("policies")))
        self._check_host_policies()
        return Topology(
            name=str(raw.get("name")),
            description=str(raw.get("description", "")),
            path=self.doc.file,
            ike_version=int(_map(raw.get("ike")).get("version", 2)) if _ike_ok(raw) else 2,
            auth_method=str(_map(raw.get("authentication")).get("method", "psk")),
            networks=tuple(networks.values()),
            hosts=tuple(self.hosts.values()),
            policies=tuple(policies.values()) + tuple(BUILTIN_POLICIES.values()),
            expectations=self._expectations(_list(raw.get("expect"))),
        )

    def _check_authentication(self, method: object) -> None:
        if isinstance(method, str) and method in _AUTH_UNSUPPORTED:
            self.error(("authentication", "method"), _AUTH_UNSUPPORTED[method])

    def _networks(self, raw: dict) -> dict[str, Network]:
        subnets = {name: _subnet(text) for name, text in raw.items()}
        return {name: Network(str(name), net) for name, net in subnets.items() if net}

    # hosts

    def _hosts(self, networks: dict[str, Network]) -> None:
        used: dict[IPv4Address, Loc] = {}  # address -> where it was first given
        for name, spec in self.raw_hosts.items():
            if name in ("me", "any"):  # filters could not tell the host from the keyword
                self.error(("hosts", name), f"{name!r} is a filter keyword; choose another name")
            if isinstance(spec, dict):
                path = ("hosts", name)
                self.hosts[name] = Host(
                    name=str(name),
                    role=str(spec.get("role")),
                    interfaces=self._interfaces(path, _map(spec.get("interfaces")), networks, used),
                    gateway=_text(spec.get("gateway")),
                    policy=_text(spec.get("policy")),
                    services=self._services(path + ("services",), _list(spec.get("services"))),
                )
        for name, spec in self.raw_hosts.items():
            self._check_gateway(name, _map(spec).get("gateway"))

    def _interfaces(self, path: Loc, raw: dict, networks: dict[str, Network],
                    used: dict) -> tuple[Interface, ...]:
        out = []
        known = _map(self.raw.get("networks"))
        for net_name, text in raw.items():
            p = path + ("interfaces", net_name)
            if net_name not in known:
                self.error(p, f"no network {str(net_name)!r}; networks are "
                           f"{', '.join(map(str, known)) or 'none'}")
            address = _ipv4(text)
            if address is None:
                continue
            if net_name in networks:
                self._check_address(p, address, networks[net_name])
            if address in used:
                self.error(p, f"{address} is already used by {field_name(used[address])} "
                           f"(line {self.doc.line(used[address])})")
            used.setdefault(address, p)
            out.append(Interface(str(net_name), address))
        return tuple(out)

    def _check_address(self, path: Loc, address: IPv4Address, net: Network) -> None:
        subnet = net.subnet
        if address not in subnet:
            self.error(path, f"{address} is not in network {net.name} ({subnet})")
        elif subnet.prefixlen <= 30 and address == subnet.network_address:
            self.error(path, f"{address} is the network address of {net.name} ({subnet})")
        elif subnet.prefixlen <= 30 and address == subnet.broadcast_address:
            self.error(path, f"{address} is the broadcast address of {net.name} ({subnet})")

    def _services(self, path: Loc, raw: list) -> tuple[Service, ...]:
        out = []
        for i, text in enumerate(raw):
            if isinstance(text, str):
                try:
                    out.append(parse_service(text))
                except ValueError as e:
                    self.error(path + (i,), str(e))
        return tuple(out)

    def _check_gateway(self, name: str, gateway: object) -> None:
        if not isinstance(gateway, str):
            return
        path = ("hosts", name, "gateway")
        if gateway == name:
            self.error(path, "a host cannot be its own gateway")
        elif gateway not in self.raw_hosts:
            self._no_host(path, gateway)
        else:
            mine = set(_map(_map(self.raw_hosts[name]).get("interfaces")))
            theirs = set(_map(_map(self.raw_hosts[gateway]).get("interfaces")))
            if not mine & theirs:
                self.error(path, f"host {gateway!r} shares no network with {name!r}")

    # policies

    def _policies(self, raw: dict) -> dict[str, Policy]:
        out = {}
        for name, spec in raw.items():
            path = ("policies", name)
            if name in BUILTIN_POLICIES:
                self.error(path, f"{name!r} is the name of a built-in policy; choose another")
            if not isinstance(spec, dict):
                continue
            rules, seen = [], {}
            for i, raw_rule in enumerate(_list(spec.get("rules"))):
                rule_name = _map(raw_rule).get("name")
                if isinstance(rule_name, str) and rule_name in seen:
                    self.error(path + ("rules", i, "name"), f"rule {rule_name!r} is already "
                               f"defined at line {self.doc.line(seen[rule_name])}")
                elif isinstance(rule_name, str):
                    seen[rule_name] = path + ("rules", i)
                if rule := self._rule(path + ("rules", i), _map(raw_rule)):
                    rules.append(rule)
            out[name] = Policy(str(name), str(spec.get("description", "")), tuple(rules),
                               respond=False)
        return out

    def _rule(self, path: Loc, raw: dict) -> Rule | None:
        action = _parse(Action, raw.get("action"))
        if raw.get("action") == "request":
            self.error(path + ("action",),
                       "'request' is not implemented yet; use require, permit or block")
        security = self._security(path, raw.get("security"), action)
        flt = self._filter(path + ("filter",), _map(raw.get("filter")))
        if action is None or flt is None:
            return None
        return Rule(str(raw.get("name")), flt, action, security, where=self.doc.where(path))

    def _security(self, path: Loc, raw: object, action: Action | None) -> tuple[Security, ...]:
        path = path + ("security",)
        if raw is None:
            return (Security.ESP,) if action is Action.REQUIRE else ()
        if action in (Action.PERMIT, Action.BLOCK):
            self.error(path, f"only a require rule has security (this rule is {action.value})")
            return ()
        items = list(enumerate(raw)) if isinstance(raw, list) else [(None, raw)]
        for i, item in items:
            if item == "ah+esp":
                self.error(path if i is None else path + (i,),
                           "'ah+esp' cannot be reproduced: strongSwan negotiates AH or ESP, "
                           "not both on one SA")
        return tuple(s for _, item in items if (s := _parse(Security, item)) is not None)

    def _filter(self, path: Loc, raw: dict) -> Filter | None:
        ends = [raw.get("from"), raw.get("to")]
        # Host policies are transport mode: each rule is between this host and a peer.
        if all(isinstance(text, str) for text in ends) and ends.count("me") != 1:
            self.error(path, "one side must be 'me'" if "me" not in ends
                       else "only one side can be 'me'; the other is the peer")
        src, dst = (self._endpoint(path + (side,), end) for side, end in zip(("from", "to"), ends))
        protocol = _protocol(raw.get("protocol"))
        for key in ("port", "src_port"):
            if key in raw and protocol not in ("tcp", "udp"):
                self.error(path + (key,), f"needs protocol tcp or udp (protocol is "
                           f"{protocol or 'any'})")
        if raw.get("mirrored", True) is False:
            self.error(path + ("mirrored",), "false is not implemented yet")
        if src is None or dst is None:
            return None
        return Filter(src, dst, protocol, _port(raw.get("src_port")), _port(raw.get("port")))

    def _endpoint(self, path: Loc, text: object) -> Endpoint | None:
        if not isinstance(text, str):
            return None
        text = str(text)  # plain str, not a ruamel scalar subclass
        if text == "me":
            return Endpoint("me", text, ())
        if text == "any":
            return Endpoint("any", text, (IPv4Network("0.0.0.0/0"),))
        if text in self.hosts:
            nets = tuple(IPv4Network(f"{a}/32") for a in self.hosts[text].addresses)
            return Endpoint("host", text, nets)
        if text in self.raw_hosts:  # a host the schema rejected; already reported
            return None
        if address := _ipv4(text):
            return Endpoint("address", text, (IPv4Network(f"{address}/32"),))
        if subnet := _subnet(text):
            return Endpoint("subnet", text, (subnet,))
        if text[:1].isdigit():
            self.error(path, bad_subnet(text) if "/" in text else
                       f"{text!r} is not an IPv4 address")
        else:
            self._no_host(path, text, "; use me, any, a host name, an IPv4 address or a subnet")
        return None

    def _no_host(self, path: Loc, name: str, hint: str = "") -> None:
        # With no usable `hosts` mapping (already reported) every reference would fail: noise.
        if isinstance(self.raw.get("hosts"), dict):
            self.error(path, f"no host {name!r}{suggest(name, self.raw_hosts)}{hint}")

    def _check_host_policies(self) -> None:
        known = list(dict.fromkeys([*_map(self.raw.get("policies")), *BUILTIN_POLICIES]))
        for name, host in self.hosts.items():
            if isinstance(host.policy, str) and host.policy not in known:
                self.error(("hosts", name, "policy"), f"no policy {host.policy!r}; "
                           f"known policies: {', '.join(map(str, known))}")

    # expectations

    def _expectations(self, raw: list) -> tuple[Expectation, ...]:
        out, seen = [], {}
        for i, spec in enumerate(raw):
            if isinstance(spec, dict) and (exp := self._expectation(("expect", i), spec)):
                key = (exp.source, exp.destination, exp.service.protocol, exp.service.port)
                if key in seen:
                    self.error(("expect", i), f"duplicate expectation {exp.source} -> "
                               f"{exp.destination} {exp.service} (first at line {seen[key]})")
                seen.setdefault(key, exp.where.line)
                out.append(exp)
        return tuple(out)

    def _expectation(self, path: Loc, spec: dict) -> Expectation | None:
        ends = [spec.get("from"), spec.get("to")]
        ok = all(isinstance(h, str) for h in ends)
        for key, host in zip(("from", "to"), ends):
            if isinstance(host, str) and host not in self.raw_hosts:
                self._no_host(path + (key,), host)
                ok = False
        if ok and ends[0] == ends[1]:
            self.error(path + ("to",), f"from and to are the same host {ends[0]!r}")
        service = None
        if isinstance(spec.get("service"), str):
            try:
                service = parse_service(spec["service"])
            except ValueError as e:
                self.error(path + ("service",), str(e))
        result = _parse(Result, spec.get("result"))
        if not ok or service is None or result is None:
            return None
        return Expectation(str(ends[0]), str(ends[1]), service, result, self.doc.where(path))


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _ike_ok(raw: dict) -> bool:
    return _map(raw.get("ike")).get("version", 2) in (1, 2)


def _protocol(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    return str(value) if value in ("tcp", "udp", "icmp") else None


def _port(value: object) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
