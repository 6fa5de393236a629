"""The `policies:` part of a topology file: policies, rules, security offers and filters.

Windows terms throughout: a rule is a filter (mirrored) and a filter action (permit, block,
request, require) with, for the negotiating actions, its options and ordered security methods.
"""

from __future__ import annotations

from lab.model.builtins import BUILTIN_POLICIES
from lab.model.errors_text import Loc, bad_subnet, field_name
from lab.model.raw import (
    Reader,
    as_bool,
    as_int,
    as_ipv4,
    as_list,
    as_map,
    as_number,
    as_subnet,
    as_text,
    parse,
)
from lab.model.topology import (
    Action,
    Endpoint,
    Filter,
    IPv4Network,
    Policy,
    Rule,
    Security,
    SecurityMethod,
    TimerProfile,
)

_GCM = ("aes128gcm16", "aes256gcm16")  # AEAD: encryption and integrity in one
TIMER_PROFILES = ("fast", "windows-2000", "windows-2003-nlb")  # see TimerProfile


class PolicyReader(Reader):
    """Reads `policies:` once the hosts and clusters are built (filters name them)."""

    def policies(self, raw: dict) -> dict[str, Policy]:
        out = {}
        for name, spec in raw.items():
            path = ("policies", name)
            if name in BUILTIN_POLICIES:
                self.error(path, f"{name!r} is the name of a built-in policy; choose another")
            if not isinstance(spec, dict):
                continue
            rules, seen = [], {}
            for i, raw_rule in enumerate(as_list(spec.get("rules"))):
                rule_name = as_map(raw_rule).get("name")
                if isinstance(rule_name, str) and rule_name in seen:
                    self.error(path + ("rules", i, "name"), f"rule {rule_name!r} is already "
                               f"defined at line {self.doc.line(seen[rule_name])}")
                elif isinstance(rule_name, str):
                    seen[rule_name] = path + ("rules", i)
                if rule := self._rule(path + ("rules", i), as_map(raw_rule)):
                    rules.append(rule)
            respond, respond_security = self._default_response(path + ("default_response",),
                                                                spec.get("default_response"))
            if not as_list(spec.get("rules")) and not respond:
                self.error(path, "this policy does nothing (no rules, and default_response "
                           "is false); add a rule or remove default_response: false")
            # Simple Policy Update (KB 914841) cuts the wait for a silent peer from 3 s to 0.5 s.
            quick = as_bool(spec.get("simple_policy_update"), False)
            out[name] = Policy(str(name), str(spec.get("description", "")), tuple(rules),
                               respond=respond, fallback_seconds=0.5 if quick else 3.0,
                               timers=self._timers(path + ("timers",), spec.get("timers")),
                               respond_security=respond_security)
        return out

    def _default_response(self, path: Loc, raw: object) -> tuple[bool, tuple[SecurityMethod, ...]]:
        """`true` (the default), `false`, or `{security: [...]}`: the rule is on, and answers
        only these methods, as a Windows administrator edits the default response rule."""
        if not isinstance(raw, dict):
            return as_bool(raw, True), ()
        security = raw.get("security")
        return True, self._security(path + ("security",), security) if security is not None else ()

    def _timers(self, path: Loc, raw: object) -> TimerProfile:
        """`fast`, a Windows profile, or {profile: windows-2000, time_scale: 0.05}."""
        spec = as_map(raw) or {"profile": raw}
        profile = spec.get("profile")
        if profile == "fast" and "time_scale" in spec:
            self.error(path + ("time_scale",), "time_scale applies to the Windows profiles "
                       "(windows-2000, windows-2003-nlb); fast uses strongSwan's own timers")
        if profile not in TIMER_PROFILES:
            return TimerProfile()  # nothing said, or a wrong value the schema reported
        scale = as_number(spec.get("time_scale", 1))
        return TimerProfile(str(profile), scale if scale and 0 < scale <= 1 else 1.0)

    def _rule(self, path: Loc, raw: dict) -> Rule | None:
        action = parse(Action, raw.get("action"))
        negotiates = action in (Action.REQUIRE, Action.REQUEST)
        if action in (Action.PERMIT, Action.BLOCK):
            for key in ("security", "inbound_passthrough", "pfs", "fallback_to_clear"):
                if raw.get(key) is not None:
                    who = "request" if key == "fallback_to_clear" else "request or require"
                    self.error(path + (key,), f"only a {who} rule has {key} (this rule is "
                               f"{action.value})")
        elif action is Action.REQUIRE and raw.get("fallback_to_clear") is True:
            self.error(path + ("fallback_to_clear",),
                       "require never falls back to clear; use action: request")
        security = self._security(path + ("security",), raw.get("security")) if negotiates else ()
        tunnel = self._tunnel(path + ("tunnel",), raw.get("tunnel"), action)
        flt = self._filter(path + ("filter",), as_map(raw.get("filter")), tunnel)
        if action is None or flt is None:
            return None
        request = action is Action.REQUEST
        return Rule(  # request: inbound passthrough and fallback to clear unless turned off
            str(raw.get("name")), flt, action, security,
            inbound_passthrough=negotiates and as_bool(raw.get("inbound_passthrough"), request),
            fallback_to_clear=request and as_bool(raw.get("fallback_to_clear"), True),
            pfs_group=as_int(raw.get("pfs")) if negotiates else None,
            where=self.doc.where(path),
            tunnel_endpoint=tunnel,
        )

    def _tunnel(self, path: Loc, raw: object, action: Action | None) -> str | None:
        """`tunnel: HOST`: tunnel mode to the host terminating the other end (B10)."""
        if not isinstance(raw, str):
            return None
        if action not in (Action.REQUIRE, Action.REQUEST):
            self.error(path, "only a request or require rule has a tunnel endpoint")
            return None
        if raw not in self.hosts:
            self.no_host(path, raw, "; the tunnel endpoint is a host")
            return None
        return str(raw)

    def _security(self, path: Loc, raw: object) -> tuple[SecurityMethod, ...]:
        if raw is None:
            return (SecurityMethod(Security.ESP),)  # Windows' offers differ; the lab's default
        items = list(enumerate(raw)) if isinstance(raw, list) else [(None, raw)]
        out: dict[SecurityMethod, Loc] = {}
        for i, item in items:
            p = path if i is None else path + (i,)
            method = self._method(p, item)
            if method in out:
                self.error(p, f"is the same offer as {field_name(out[method])}")
            elif method:
                out[method] = p
        return tuple(out)

    def _method(self, path: Loc, item: object) -> SecurityMethod | None:
        """One offer: `esp`, `ah` or a mapping with protocol, algorithms and lifetime."""
        spec = item if isinstance(item, dict) else {"protocol": item}
        protocol = spec.get("protocol")
        if protocol == "ah+esp":
            self.error(path, "'ah+esp' cannot be reproduced: strongSwan negotiates AH or ESP, "
                       "not both on one SA")
        protocol = parse(Security, protocol)
        # YAML reads `encryption: null` as nothing: a key with no value is the null cipher.
        encryption = as_text(spec.get("encryption", "")) or ("null" if "encryption" in spec
                                                             else None)
        integrity = as_text(spec.get("integrity"))
        if protocol is Security.AH and encryption:
            self.error(path + ("encryption",), "AH has no encryption; use protocol: esp, or "
                       "remove encryption")
        elif protocol is Security.ESP and encryption == "null" and not integrity:
            self.error(path, "ESP null needs integrity (like sha1): with neither encryption "
                       "nor integrity it protects nothing")
        elif protocol is Security.ESP and encryption in _GCM and integrity:
            self.error(path + ("integrity",), f"{encryption} carries its own integrity; remove "
                       "integrity")
        elif protocol is Security.ESP and encryption and encryption not in _GCM and not integrity:
            self.error(path, f"ESP with {encryption} needs integrity too (like sha1); only the "
                       "gcm ciphers carry their own")
        if protocol is None:
            return None
        lifetime = as_map(spec.get("lifetime"))
        return SecurityMethod(protocol, encryption, integrity, as_int(lifetime.get("seconds")),
                              as_int(lifetime.get("kilobytes")))

    def _filter(self, path: Loc, raw: dict, tunnel: str | None = None) -> Filter | None:
        ends = [raw.get("from"), raw.get("to")]
        # Host policies are transport mode: each rule is between this host and a peer. A tunnel
        # rule's filter is the tunnel's inner traffic: a gateway protects others' traffic.
        if tunnel and "me" not in ends and tunnel not in ends:
            self.error(path, f"one side must be 'me' or the tunnel endpoint {tunnel!r} (the "
                       "side behind the tunnel's far end)")
        elif tunnel and ends.count("me") == 2:
            self.error(path, "only one side can be 'me'; the other is the peer")
        elif not tunnel and all(isinstance(text, str) for text in ends) and ends.count("me") != 1:
            self.error(path, "one side must be 'me'" if "me" not in ends
                       else "only one side can be 'me'; the other is the peer")
        src, dst = (self._endpoint(path + (side,), end) for side, end in zip(("from", "to"), ends))
        protocol = _protocol(raw.get("protocol"))
        for key in ("port", "src_port"):
            if key in raw and protocol not in ("tcp", "udp"):
                self.error(path + (key,), f"needs protocol tcp or udp (protocol is "
                           f"{protocol or 'any'})")
        if raw.get("mirrored", True) is False:
            self.error(path + ("mirrored",), "strongSwan installs every policy in both "
                       "directions: one-way (unmirrored) filters cannot be reproduced")
        if src is None or dst is None:
            return None
        return Filter(src, dst, protocol, as_int(raw.get("src_port")), as_int(raw.get("port")))

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
        if text in self.clusters:  # its virtual IP
            return Endpoint("cluster", text, (IPv4Network(f"{self.clusters[text].vip}/32"),))
        if text in self.raw_hosts or text in self.raw_clusters:  # rejected; already reported
            return None
        if address := as_ipv4(text):
            return Endpoint("address", text, (IPv4Network(f"{address}/32"),))
        if subnet := as_subnet(text):
            return Endpoint("subnet", text, (subnet,))
        if text[:1].isdigit():
            self.error(path, bad_subnet(text) if "/" in text else
                       f"{text!r} is not an IPv4 address")
        else:
            name = "a host or cluster name" if self.raw_clusters else "a host name"
            self.no_host(path, text, f"; use me, any, {name}, an IPv4 address or a subnet",
                         or_cluster=True)
        return None


def _protocol(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    return str(value) if value in ("tcp", "udp", "icmp") else None
