"""Reading a parsed topology file that may have failed the schema.

The schema has already reported every value of the wrong type, so the semantic checks skip
them: each conversion here gives a value of the right (plain Python) type, or None. `Reader`
collects the semantic problems, each as `FILE:LINE: field: message`.
"""

from __future__ import annotations

from typing import Any

from lab.model.builtins import BUILTIN_POLICIES
from lab.model.errors_text import Doc, Loc, suggest
from lab.model.services import parse_service
from lab.model.topology import Cluster, Host, IPv4Address, IPv4Network, Network, Service


class Reader:
    """The file, its hosts and clusters as written and as built, and the problems so far."""

    def __init__(self, doc: Doc):
        self.doc = doc
        self.problems: list[tuple[int, str, str]] = []
        self.raw = as_map(doc.data)
        # Names that are not text (`1:`, `null:`) are the schema's to report; kept here they
        # would meet their own str() as a different key.
        self.raw_hosts = _named(self.raw.get("hosts"))
        self.hosts: dict[str, Host] = {}
        self.raw_clusters = _named(self.raw.get("clusters"))
        self.clusters: dict[str, Cluster] = {}

    def error(self, path: Loc, message: str) -> None:
        self.problems.append(self.doc.problem(path, message))

    def no_host(self, path: Loc, name: str, hint: str = "", or_cluster: bool = False) -> None:
        """`or_cluster`: the field also takes a cluster name (said only when there are some)."""
        # With no usable `hosts` mapping (already reported) every reference would fail: noise.
        if not isinstance(self.raw.get("hosts"), dict):
            return
        if or_cluster and self.raw_clusters:
            known = self._names(with_clusters=True)
            self.error(path, f"no host or cluster {name!r}{suggest(name, known)}{hint}")
        else:
            self.error(path, f"no host {name!r}{suggest(name, self._names())}{hint}")

    def _names(self, with_clusters: bool = False) -> tuple[str, ...]:
        """Host (and cluster) names as one tuple, made once: 2,000 typos ask 2,000 times."""
        cache = self.__dict__.setdefault("_name_lists", {})
        if with_clusters not in cache:
            names = [*self.raw_hosts, *(self.raw_clusters if with_clusters else ())]
            cache[with_clusters] = tuple(str(n) for n in names)
        return cache[with_clusters]

    def known_policies(self) -> list[str]:
        """The file's policies, then the built-ins: what a `policy:` may name."""
        return list(dict.fromkeys([*as_map(self.raw.get("policies")), *BUILTIN_POLICIES]))

    def check_policy(self, path: Loc, name: object) -> None:
        known = self.known_policies()
        if isinstance(name, str) and name not in known:
            self.error(path, f"no policy {str(name)!r}; known policies: "
                       f"{', '.join(map(str, known))}")

    def check_address(self, path: Loc, address: IPv4Address, net: Network) -> None:
        subnet = net.subnet
        if address not in subnet:
            self.error(path, f"{address} is not in network {net.name} ({subnet})")
        elif subnet.prefixlen <= 30 and address == subnet.network_address:
            self.error(path, f"{address} is the network address of {net.name} ({subnet})")
        elif subnet.prefixlen <= 30 and address == subnet.broadcast_address:
            self.error(path, f"{address} is the broadcast address of {net.name} ({subnet})")

    def read_services(self, path: Loc, raw: list) -> tuple[Service, ...]:
        out = []
        for i, text in enumerate(raw):
            if isinstance(text, str):
                try:
                    out.append(parse_service(text))
                except ValueError as e:
                    self.error(path + (i,), str(e))
        return tuple(out)

    def no_cluster(self, path: Loc, name: str) -> None:
        if not self.raw_clusters:
            self.error(path, f"no cluster {name!r}; define it under clusters:")
        else:
            self.error(path, f"no cluster {name!r}{suggest(name, self.raw_clusters)}")


def _named(value: object) -> dict:
    return {k: v for k, v in as_map(value).items() if isinstance(k, str)}


def as_map(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list:
    return value if isinstance(value, list) else []


def parse(kind: type, value: object) -> Any:
    """kind(value), or None when the value is not one."""
    try:
        return kind(value)
    except (ValueError, TypeError):
        return None


def as_ipv4(text: object) -> IPv4Address | None:
    return parse(IPv4Address, text) if isinstance(text, str) else None


def as_subnet(text: object) -> IPv4Network | None:
    return parse(IPv4Network, text) if isinstance(text, str) and "/" in text else None


def as_text(value: object) -> str | None:
    return None if value is None else str(value)


def as_str(value: object) -> str | None:
    """Text as a plain str; None for anything else (unlike as_text, which stringifies)."""
    return str(value) if isinstance(value, str) else None


def as_int(value: object) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def as_number(value: object) -> float | None:
    """An int or float as a float (YAML `6` and `6.0` alike); None for anything else."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok else None


def as_bool(value: object, default: bool) -> bool:
    return bool(value) if isinstance(value, bool) else default
