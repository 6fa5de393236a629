"""Drafts -> a topology: addresses become host names, policies go under `policies:`, the
script's host gets its assigned policy, and the result is checked by the topology loader.

Without a base topology the result is a skeleton: the hosts named with --host, one network
per /24 they are on, no expectations. With `--into BASE`, the scripts' policies replace the
base's policies of the same name and everything else (networks, hosts, expect) is kept.
"""

from __future__ import annotations

import io
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from lab.errors import TopologyError
from lab.model.load import load_topology
from lab.windows.draft import Draft, WINDOWS_NAMES


@dataclass
class Result:
    text: str  # the topology, YAML
    notes: list[str]  # what the user should know (replaced policies, unassigned ones)


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def build(drafts: list[tuple[Draft, str | None]], hosts: dict[str, str],
          base: str | None = None, name: str = "imported") -> Result:
    problems = [p for d, _ in drafts for p in d.problems]
    if problems:
        raise TopologyError(problems)
    notes: list[str] = []
    doc = _base(base) if base else CommentedMap(name=name)
    raw_hosts = doc.setdefault("hosts", CommentedMap())
    names = _address_names(doc, hosts, raw_hosts, base)
    if not base:
        _skeleton(doc, hosts)
    _authentication(doc, drafts, base, notes)
    _ike(doc, drafts, notes)
    for draft, host in drafts:
        for policy in draft.policies.values():
            if policy.name in doc.get("policies", {}):
                notes.append(f"{draft.file}: policy {policy.name!r} replaces the one in {base}")
            doc.setdefault("policies", CommentedMap())[policy.name] = _flow(policy.raw(names))
        _assign(doc, draft, host, notes)
    if not base:  # keys in the order a reader expects
        for key in ("name", "ike", "authentication", "exemptions", "networks", "hosts",
                    "policies"):
            if key in doc:
                doc.move_to_end(key)
    return Result(_dump(doc), notes)


def _base(path: str) -> CommentedMap:
    load_topology(path)  # a base that is itself wrong is reported as such, before anything else
    return _yaml().load(Path(path).read_text(encoding="utf-8"))


def _address_names(doc: CommentedMap, given: dict[str, str], raw_hosts: dict,
                   base: str | None) -> dict[str, str]:
    """Address -> host (or cluster) name: the base topology's, then --host NAME=ADDRESS."""
    names: dict[str, str] = {}
    for host, spec in raw_hosts.items():
        for address in (spec.get("interfaces") or {}).values():
            names[str(address)] = str(host)
    for cluster, spec in (doc.get("clusters") or {}).items():
        names[str(spec.get("vip"))] = str(cluster)
    problems = []
    for host, address in given.items():
        known = [a for a, h in names.items() if h == host]
        if base and host in raw_hosts and address not in known:
            problems.append(f"--host {host}={address}: {base} gives {host} "
                            f"{', '.join(known) or 'no address'}")
        elif base and host not in raw_hosts:
            problems.append(f"--host {host}={address}: no host {host!r} in {base}; add it there")
        names[address] = host
    if problems:
        raise TopologyError(problems)
    return names


def _authentication(doc: CommentedMap, drafts, base: str | None, notes: list[str]) -> None:
    found = [(m, w) for d, _ in drafts for m, w in d.auth]
    if not found:
        return
    method, where = found[0]
    for other, w in found[1:]:
        if other != method:
            raise TopologyError([f"{w}: authenticates with {other}, but {where} with {method}; "
                                 "the lab uses one method per topology"])
    current = (doc.get("authentication") or {}).get("method", "psk")
    if current != method:
        if base:
            notes.append(f"authentication: {method} (the scripts'), was {current} in {base}")
        doc["authentication"] = _flow({"method": method})


def _ike(doc: CommentedMap, drafts, notes: list[str]) -> None:
    ike = doc.get("ike") or CommentedMap()
    for draft, _ in drafts:
        if draft.ike_version and ike.get("version", 2) != draft.ike_version:
            notes.append(f"{draft.file}: ike version {draft.ike_version} (Windows 2000/2003 "
                         f"speak IKEv1 only), was {ike.get('version', 2)}")
            ike["version"] = draft.ike_version
        if draft.ike_methods:
            ike["methods"] = [_flow(m) for m in draft.ike_methods]
        if draft.ike_lifetime_minutes:
            ike["lifetime_minutes"] = draft.ike_lifetime_minutes
    if ike:
        doc["ike"] = _flow(ike) if "methods" not in ike else ike


def _assign(doc: CommentedMap, draft: Draft, host: str | None, notes: list[str]) -> None:
    assigned = list(dict.fromkeys(name for name, _ in draft.assigned))
    if len(assigned) > 1:
        where = draft.assigned[-1][1]
        raise TopologyError([f"{where}: assigns a second policy ({', '.join(assigned)}); "
                             "Windows keeps one policy active per computer"])
    if host is None:
        for policy in assigned:
            notes.append(f"{draft.file}: assigns {WINDOWS_NAMES.get(policy, policy)!r}; to give "
                         f"it to a host, write HOST={draft.file}")
        if draft.exemptions is not None:
            doc["exemptions"] = draft.exemptions
        return
    spec = doc["hosts"].get(host)
    if spec is None:
        raise TopologyError([f"{host}={draft.file}: no host {host!r}; name it with --host "
                             f"{host}=ADDRESS" + (" or add it to the base topology" if
                                                  doc.get("networks") else "")])
    if not assigned:
        raise TopologyError([f"{draft.file}:1: the script assigns no policy (set policy ... "
                             f"assign=yes, ipseccmd -x); {host}= needs the policy in force"])
    cluster = spec.get("cluster")
    if cluster and cluster in (doc.get("clusters") or {}):
        doc["clusters"][cluster]["policy"] = assigned[0]  # a node's policy is its cluster's
    else:
        spec["policy"] = assigned[0]
    if draft.exemptions is not None:
        spec["exemptions"] = draft.exemptions


def _skeleton(doc: CommentedMap, hosts: dict[str, str]) -> None:
    """Networks and hosts for a topology written from scripts alone: one /24 per network."""
    networks = doc.setdefault("networks", CommentedMap())
    for host, address in hosts.items():
        net = ipaddress.IPv4Network(f"{address}/24", strict=False)
        net_name = next((n for n, s in networks.items() if s == str(net)),
                        f"net{len(networks) + 1}")
        networks[net_name] = str(net)
        spec = doc["hosts"].setdefault(host, CommentedMap(role="client"))
        spec.insert(1, "interfaces", _flow({net_name: address}))
        spec.fa.set_flow_style()


def _flow(value):
    """Short mappings on one line, as the shipped topologies write them."""
    if isinstance(value, dict):
        out = CommentedMap((k, _flow(v)) for k, v in value.items())
        if not any(isinstance(v, (dict, list)) for v in value.values()) or "from" in value:
            out.fa.set_flow_style()
        if "rules" in value or "methods" in value:
            out.fa.set_block_style()
        return out
    if isinstance(value, list):
        seq = CommentedSeq(_flow(v) for v in value)
        if all(isinstance(v, str) for v in value):
            seq.fa.set_flow_style()
        return seq
    return value


def _dump(doc) -> str:
    buf = io.StringIO()
    _yaml().dump(doc, buf)
    return buf.getvalue()


def check(text: str, shown_as: str) -> None:
    """Load the result with the topology loader; its problems name `shown_as`."""
    fd, tmp = tempfile.mkstemp(suffix=".yaml", prefix=".import-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            load_topology(tmp)
        except TopologyError as e:
            raise TopologyError([p.replace(tmp, shown_as) for p in e.problems]) from None
    finally:
        os.unlink(tmp)
