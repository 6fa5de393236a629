"""`netsh ipsec static` (Windows Server 2003): policies, filter lists, filters, filter actions,
rules, `set policy ... assign=yes`, `set defaultrule` (the default response rule: on or off, and
its security methods), and `netsh ipsec dynamic set config ipsecexempt`.

Syntax: "Netsh commands for Internet Protocol security (IPsec)", Windows Server 2003 Technical
Reference (netsh ipsec static add policy|filterlist|filter|filteraction|rule, set policy).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from lab.windows import methods
from lab.windows.draft import Draft, DraftPolicy, DraftRule, builtin
from lab.windows.script import Command, Refusal, Where, slug, tagged, yes_no

TAGS = {
    ("add", "policy"): ("name", "description", "mmpfs", "qmpermm", "mmlifetime",
                        "activatedefaultrule", "pollinginterval", "assign", "mmsecmethods"),
    ("add", "filterlist"): ("name", "description"),
    ("add", "filter"): ("filterlist", "srcaddr", "dstaddr", "description", "protocol", "mirrored",
                        "srcmask", "dstmask", "srcport", "dstport"),
    ("add", "filteraction"): ("name", "description", "qmpfs", "inpass", "soft", "action",
                              "qmsecmethods"),
    ("add", "rule"): ("name", "policy", "filterlist", "filteraction", "tunnel", "conntype",
                      "activate", "description", "kerberos", "psk", "rootca"),
    ("set", "policy"): ("name", "newname", "description", "mmpfs", "qmpermm", "mmlifetime",
                        "activatedefaultrule", "pollinginterval", "assign", "gponame",
                        "mmsecmethods"),
    ("set", "defaultrule"): ("policy", "qmpfs", "activate", "qmsecmethods", "kerberos", "psk",
                             "rootca"),
}
CONFIG = ("property", "value")
_PROTOCOLS = {"any": None, "tcp": "tcp", "udp": "udp", "icmp": "icmp", "0": None, "6": "tcp",
              "17": "udp", "1": "icmp"}
# `set config` properties that only change logging: no effect on any packet.
_LOGGING = ("ipsecdiagnostics", "ikelogging", "ipsecloginterval")


@dataclass
class _Filter:
    where: Where
    src: str
    dst: str
    protocol: str | int | None
    src_port: int | None
    dst_port: int | None


@dataclass
class _Action:
    where: Where
    action: str
    inpass: bool = False
    pfs: bool = False
    security: list[dict] = field(default_factory=list)


@dataclass
class _Rule:
    where: Where
    policy: str
    filterlist: str
    filteraction: str


class NetshReader:
    """Reads one script's netsh commands, then resolves rules against lists and actions."""

    def __init__(self, draft: Draft):
        self.draft = draft
        self.lists: dict[str, list[_Filter]] = {}
        self.actions: dict[str, _Action] = {}
        self.rules: list[_Rule] = []
        self.policies: dict[str, DraftPolicy] = {}  # by Windows name

    def feed(self, cmd: Command, words: list[str]) -> None:
        """`words` follow `netsh ipsec`: `static add filter ...` or `dynamic set config ...`."""
        context, rest = (words[0].lower(), words[1:]) if words else ("", [])
        if context == "dynamic" and [w.lower() for w in rest[:2]] == ["set", "config"]:
            return self._config(cmd.where, tagged(rest[2:], CONFIG))
        if context != "static":
            raise Refusal(f"netsh ipsec {context}: only `netsh ipsec static` commands and "
                          "`netsh ipsec dynamic set config` are read")
        verb = tuple(w.lower() for w in rest[:2])
        if verb[:1] == ("show",):
            return  # reads, changes nothing
        if verb == ("delete", "all"):
            self.__init__(self.draft)  # the usual first line of a script: start from nothing
            return
        if verb not in TAGS:
            raise Refusal(f"netsh ipsec static {' '.join(rest[:2])}: not a command the importer "
                          f"reads (add policy|filterlist|filter|filteraction|rule, set policy|"
                          "defaultrule, delete all)")
        args = tagged(rest[2:], TAGS[verb])
        getattr(self, "_" + "_".join(verb))(cmd.where, args)

    # commands

    def _add_policy(self, where: Where, a: dict) -> None:
        name = _need(a, "name")
        if builtin(name):
            raise Refusal(f"{name!r} is a Windows default policy; it exists already")
        if name in self.policies:
            raise Refusal(f"policy {name!r} is already added")
        policy = DraftPolicy(slug(name), where, a.get("description", ""))
        self.policies[name] = policy
        self._policy_settings(where, policy, a)

    def _set_policy(self, where: Where, a: dict) -> None:
        name = _need(a, "name")
        for key in ("newname", "gponame"):
            if key in a:
                raise Refusal(f"set policy {key}=: not read; write the policy under its final name")
        if builtin(name):
            for key in a.keys() - {"name", "assign"}:
                raise Refusal(f"{key}= on the default policy {name!r}: the lab's built-in is "
                              "fixed; copy it into a policy of your own")
            self._settings_assign(where, builtin(name), a)
            return
        if name not in self.policies:
            raise Refusal(f"no policy {name!r} added before this line")
        policy = self.policies[name]
        if "description" in a:
            policy.description = a["description"]
        self._policy_settings(where, policy, a)

    def _set_defaultrule(self, where: Where, a: dict) -> None:
        """The default response rule of a policy added before: on or off, and its methods."""
        name = _need(a, "policy")
        if builtin(name):
            raise Refusal(f"set defaultrule on the default policy {name!r}: the lab's built-in is "
                          "fixed; copy it into a policy of your own")
        if name not in self.policies:
            raise Refusal(f"no policy {name!r} added before this line")
        if "qmpfs" in a and yes_no("qmpfs", a["qmpfs"]):
            raise Refusal("qmpfs=yes on the default response rule: it answers with or without "
                          "PFS as the peer asks; remove qmpfs")
        policy = self.policies[name]
        if "activate" in a:
            policy.respond = yes_no("activate", a["activate"])
        if "qmsecmethods" in a:
            policy.respond_security = methods.netsh_in(a["qmsecmethods"])
        if "kerberos" in a and yes_no("kerberos", a["kerberos"]):
            raise Refusal("kerberos=yes: the lab cannot authenticate IKE with Kerberos "
                          "(strongSwan has no GSS-API); use psk= or rootca=")
        auth = ["psk"] * ("psk" in a) + ["certificates"] * ("rootca" in a)
        if len(auth) > 1:
            raise Refusal("both psk= and rootca=: the lab authenticates with one method")
        self.draft.auth += [(method, where) for method in auth]

    def _policy_settings(self, where: Where, policy: DraftPolicy, a: dict) -> None:
        if "mmpfs" in a and yes_no("mmpfs", a["mmpfs"]):
            raise Refusal("mmpfs=yes (master key PFS, a new Main Mode for every Quick Mode) has "
                          "no strongSwan equivalent")
        if a.get("qmpermm", "0") != "0":
            raise Refusal(f"qmpermm={a['qmpermm']}: a limit of Quick Modes per Main Mode has no "
                          "strongSwan equivalent; use 0 (no limit)")
        if "activatedefaultrule" in a:
            policy.respond = yes_no("activatedefaultrule", a["activatedefaultrule"])
        if "pollinginterval" in a and not a["pollinginterval"].isdigit():
            raise Refusal(f"pollinginterval={a['pollinginterval']}: expected minutes")
        minutes = _int(a, "mmlifetime")
        mm = methods.mm_in(a["mmsecmethods"]) if "mmsecmethods" in a else None
        self.draft.set_ike(where, mm, minutes)
        self._settings_assign(where, policy.name, a)

    def _settings_assign(self, where: Where, name: str, a: dict) -> None:
        if "assign" in a and yes_no("assign", a["assign"]):
            self.draft.assigned.append((name, where))

    def _add_filterlist(self, where: Where, a: dict) -> None:
        self.lists.setdefault(_need(a, "name"), [])

    def _add_filter(self, where: Where, a: dict) -> None:
        if "mirrored" in a and not yes_no("mirrored", a["mirrored"]):
            raise Refusal("mirrored=no: strongSwan installs every policy in both directions; "
                          "one-way filters cannot be reproduced")
        protocol = a.get("protocol", "any").lower()
        if protocol == "raw":
            raise Refusal("protocol=RAW: give the protocol number")
        if protocol in _PROTOCOLS:
            proto = _PROTOCOLS[protocol]
        elif protocol.isdigit() and int(protocol) <= 255:
            proto = int(protocol)
        else:
            raise Refusal(f"protocol={protocol}: expected ANY, ICMP, TCP, UDP or a number 0-255")
        ports = _int(a, "srcport") or None, _int(a, "dstport") or None
        if any(ports) and proto not in ("tcp", "udp"):
            raise Refusal("a port needs protocol=TCP or UDP")
        src = address(a.get("srcaddr") or _need(a, "srcaddr"), a.get("srcmask"), "srcaddr")
        dst = address(a.get("dstaddr") or _need(a, "dstaddr"), a.get("dstmask"), "dstaddr")
        self.lists.setdefault(_need(a, "filterlist"), []).append(
            _Filter(where, src, dst, proto, *ports))

    def _add_filteraction(self, where: Where, a: dict) -> None:
        name = _need(a, "name")
        if "action" not in a:
            raise Refusal("no action=: say permit, block or negotiate")
        kind = a["action"].lower()
        if kind not in ("permit", "block", "negotiate"):
            raise Refusal(f"action={a['action']}: expected permit, block or negotiate")
        soft = yes_no("soft", a.get("soft", "no"))
        act = _Action(where, kind, yes_no("inpass", a.get("inpass", "no")),
                      yes_no("qmpfs", a.get("qmpfs", "no")))
        if kind == "negotiate":
            if "qmsecmethods" not in a:
                raise Refusal("negotiate without qmsecmethods: Windows' default offers are not in "
                              "the script; list them (like ESP[3DES,SHA1])")
            act.action = "request" if soft else "require"
            act.security = methods.netsh_in(a["qmsecmethods"])
        elif "qmsecmethods" in a or soft or act.inpass or act.pfs:
            raise Refusal(f"action={kind} with security options: Windows ignores them, the lab "
                          "refuses them; remove qmsecmethods, soft, inpass and qmpfs")
        self.actions[name] = act

    def _add_rule(self, where: Where, a: dict) -> None:
        for key in ("tunnel",):
            if key in a:
                raise Refusal("tunnel=: tunnel rules are not imported; the lab's tunnel rules "
                              "(tunnel: HOST) are written by hand")
        if a.get("conntype", "all").lower() not in ("all", "lan"):
            raise Refusal(f"conntype={a['conntype']}: the lab has LAN connections only")
        if "activate" in a and not yes_no("activate", a["activate"]):
            raise Refusal("activate=no: an inactive rule does nothing; delete it or activate it")
        rule = _Rule(where, _need(a, "policy"), _need(a, "filterlist"), _need(a, "filteraction"))
        auth = []
        if "kerberos" in a and yes_no("kerberos", a["kerberos"]):
            auth.append("kerberos")
        auth += ["psk"] * ("psk" in a) + ["certificates"] * ("rootca" in a)
        self.rules.append(rule)
        self._auth(where, rule, auth)

    def _auth(self, where: Where, rule: _Rule, auth: list[str]) -> None:
        action = self.actions.get(rule.filteraction)
        if action and action.action in ("permit", "block") and not auth:
            return  # no IKE for permit and block
        if "kerberos" in auth:
            raise Refusal("kerberos=yes: the lab cannot authenticate IKE with Kerberos "
                          "(strongSwan has no GSS-API); use psk= or rootca=")
        if not auth:
            raise Refusal("no authentication (no psk=, rootca=): Windows then uses Kerberos, "
                          "which the lab cannot do; add psk= or rootca=")
        if len(auth) > 1:
            raise Refusal("both psk= and rootca=: the lab authenticates with one method")
        self.draft.auth.append((auth[0], where))

    def _config(self, where: Where, a: dict) -> None:
        prop, value = a.get("property", "").lower(), a.get("value", "")
        if prop == "ipsecexempt":
            if value not in ("0", "1", "2", "3"):
                raise Refusal(f"ipsecexempt value={value}: expected 0, 1, 2 or 3")
            self.draft.exemptions = int(value)
        elif prop not in _LOGGING:
            raise Refusal(f"set config property={prop}: only ipsecexempt changes what crosses the "
                          f"wire, and only it is read (logging: {', '.join(_LOGGING)} are ignored)")

    # the end of the file

    def finish(self) -> None:
        for win_name, policy in self.policies.items():
            self.draft.policies[policy.name] = policy
        for rule in self.rules:
            try:
                self._resolve(rule)
            except Refusal as e:
                self.draft.refuse(rule.where, str(e))

    def _resolve(self, r: _Rule) -> None:
        if r.policy not in self.policies:
            what = "a Windows default policy" if builtin(r.policy) else "not added in this script"
            raise Refusal(f"policy {r.policy!r}: {what}; rules go into a policy the script adds")
        if r.filterlist not in self.lists or not self.lists[r.filterlist]:
            raise Refusal(f"filter list {r.filterlist!r} has no filters")
        if r.filteraction not in self.actions:
            raise Refusal(f"no filter action {r.filteraction!r} added in this script")
        policy, action = self.policies[r.policy], self.actions[r.filteraction]
        group = self.draft.ike_group() if action.pfs else None
        if action.pfs and group is None:
            raise Refusal(f"filter action {r.filteraction!r} has qmpfs=yes, which reuses the Main "
                          "Mode DH group: give the policy mmsecmethods with one DH group")
        filters = self.lists[r.filterlist]
        base = slug(r.filterlist)
        taken = {x.name for x in policy.rules}
        if base in taken or any(x.name.startswith(base + "-") for x in policy.rules):
            base = f"{base}-{slug(r.filteraction)}"
        for i, f in enumerate(filters, 1):
            name = base if len(filters) == 1 else f"{base}-{i}"
            policy.rules.append(DraftRule(
                name, f.where, f.src, f.dst, f.protocol, f.src_port, f.dst_port, action.action,
                list(action.security), inbound_passthrough=action.inpass,
                fallback_to_clear=action.action == "request", pfs=group))


def address(value: str, mask: str | None, tag: str) -> str:
    """me, any, an IPv4 address, or address + mask as a subnet."""
    low = value.lower()
    if low in ("me", "any"):
        if mask:
            raise Refusal(f"{tag}={value} with a mask: a mask goes with an address")
        return low
    if low in ("dns", "wins", "dhcp", "gateway"):
        raise Refusal(f"{tag}={value}: server-type addresses change with the network's "
                      "configuration; write the server's address")
    if "-" in value:
        raise Refusal(f"{tag}={value}: address ranges have no lab equivalent; use a subnet")
    try:
        ip = ipaddress.IPv4Address(value)
    except ValueError:
        raise Refusal(f"{tag}={value}: not an IPv4 address (DNS names are resolved once by "
                      "Windows; write the address)") from None
    if not mask or mask in ("255.255.255.255", "32"):
        return str(ip)
    try:
        net = ipaddress.IPv4Network(f"{ip}/{mask}")
    except ValueError:
        raise Refusal(f"{tag}={value} mask {mask}: not a subnet (host bits set, or a bad "
                      "mask)") from None
    return str(net)


def _need(a: dict, key: str) -> str:
    if not a.get(key):
        raise Refusal(f"{key}= is missing")
    return a[key]


def _int(a: dict, key: str) -> int | None:
    if key not in a:
        return None
    if not a[key].isdigit() or (key.endswith("port") and int(a[key]) > 65535):
        raise Refusal(f"{key}={a[key]}: expected a number" + (" 0-65535" if "port" in key else ""))
    return int(a[key])
