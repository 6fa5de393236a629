"""Export: one host's policy, as proven in the lab, written as the script that deploys it.

Everything the format cannot say is refused, one line each (`file:line: field: reason`), and
nothing is written: a script that deploys something else than what was verified is worse than
none. Secrets are never written: the preshared key is %IPSEC_PSK% and the root CA
%IPSEC_ROOTCA%, batch variables the administrator sets before running the script.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from lab.compile.proposals import methods as rule_methods
from lab.compile.proposals import _ah, _esp
from lab.errors import TopologyError
from lab.model.topology import Action, Endpoint, Host, Policy, Rule, Security, SecurityMethod
from lab.model.topology import TimerProfile, Topology
from lab.windows import methods
from lab.windows.consec import ACTIONS, PFS
from lab.windows.draft import WINDOWS_NAMES
from lab.windows.script import Refusal

FORMATS = ("netsh", "ipseccmd", "consec")
PSK, ROOTCA = "%IPSEC_PSK%", "%IPSEC_ROOTCA%"


def export(topology: Topology, host_name: str, fmt: str) -> str:
    host = next((h for h in topology.hosts if h.name == host_name), None)
    if host is None:
        raise TopologyError([f"--host: no host {host_name!r} in {topology.path}"])
    name = host.policy or next((c.policy for c in topology.clusters if c.name == host.cluster),
                               None)
    if not name:
        raise TopologyError([f"{topology.path}: host {host_name} has no policy: it speaks no "
                             "IPsec, there is nothing to deploy"])
    policy = next(p for p in topology.policies if p.name == name)
    writer = _Writer(topology, host, policy, fmt)
    text = writer.write()
    if writer.problems:
        raise TopologyError(writer.problems)
    return text


class _Writer:
    def __init__(self, topology: Topology, host: Host, policy: Policy, fmt: str):
        self.t, self.host, self.policy, self.fmt = topology, host, policy, fmt
        self.problems: list[str] = []

    def refuse(self, rule: Rule | None, reason: str) -> None:
        where = rule.where if rule and rule.where else None
        head = str(where) if where else f"{self.t.path}: policies.{self.policy.name}"
        self.problems.append(f"{head}: {self.fmt}: {reason}")

    def attempt(self, rule: Rule | None, fn: Callable[[], str]) -> str:
        try:
            return fn()
        except Refusal as e:
            self.refuse(rule, str(e))
            return ""

    def write(self) -> str:
        head = [f"rem {self.policy.name} for {self.host.name}, exported by `lab export` from "
                f"{self.t.path} ({self.fmt})"]
        if self.t.auth_method == "psk" and not self.policy.builtin:
            head.append(f"rem set IPSEC_PSK=<the preshared key> before running this script")
        if self.t.auth_method == "certificates" and not self.policy.builtin:
            head.append(f"rem set IPSEC_ROOTCA=<the root CA's name> before running this script")
        self._common()
        body = getattr(self, "_" + self.fmt)()
        return "\n".join(head + body) + "\n"

    def _common(self) -> None:
        p = self.policy
        if p.builtin and self.fmt == "consec":
            self.refuse(None, f"{p.name} is a Windows 2000/2003 default policy; connection "
                        "security rules have no such policies (and no default response rule)")
        if p.timers != TimerProfile():
            self.refuse(None, f"timers: {p.timers.name}: idle and NLB timers are registry "
                        "settings (SAIdleTime, NLBSFlags), not part of the policy script")
        if p.fallback_seconds != 3.0:
            self.refuse(None, "simple_policy_update: a Windows update (KB 914841), not part of "
                        "the policy script")
        if self.fmt in ("netsh", "ipseccmd") and self.t.ike_version != 1 and not p.builtin:
            self.refuse(None, "this design was verified with IKEv2; Windows 2000/2003 speak "
                        "IKEv1 only: set ike: {version: 1} and verify again")
        for rule in p.rules:
            if rule.tunnel_endpoint:
                self.refuse(rule, "tunnel rules are not exported")
            if rule.action is Action.REQUEST and not rule.fallback_to_clear:
                self.refuse(rule, "request without fallback_to_clear is require on Windows: "
                            "write action: require")

    # ---- addresses -----------------------------------------------------------------------------

    def address(self, rule: Rule, end: Endpoint) -> tuple[str, str | None]:
        """(address, mask) as Windows writes them: me, any, an address, or address + mask."""
        if end.kind in ("me", "any"):
            return end.kind, None
        nets = end.networks
        if len(nets) != 1:
            raise Refusal(f"{end.text} has {len(nets)} addresses; a Windows filter names one: "
                          "write one rule per address")
        net = nets[0]
        if net.prefixlen == 32:
            return str(net.network_address), None
        return str(net.network_address), str(net.netmask)

    # ---- netsh ipsec static --------------------------------------------------------------------

    def _netsh(self) -> list[str]:
        p, out = self.policy, []
        q = _quote
        exempt = (f"netsh ipsec dynamic set config property=ipsecexempt "
                  f"value={self.host.exemptions}")
        if p.builtin:
            return [f"netsh ipsec static set policy name={q(WINDOWS_NAMES[p.name])} assign=yes",
                    exempt]
        out.append("netsh ipsec static delete all")
        policy = (f"netsh ipsec static add policy name={q(p.name)}"
                  + (f" description={q(p.description)}" if p.description else "")
                  + f" activatedefaultrule={'yes' if p.respond else 'no'}")
        if self.t.ike_methods:
            mm = self.attempt(None, lambda: methods.mm_out(self.t.ike_methods))
            policy += f" mmsecmethods={q(mm)}"
        if self.t.ike_lifetime_minutes:
            policy += f" mmlifetime={self.t.ike_lifetime_minutes}"
        out.append(policy)
        auth = f' psk="{PSK}"' if self.t.auth_method == "psk" else \
            f' rootca="{ROOTCA} certmap:no excludecaname:no"'
        if p.respond and p.respond_security:  # the default response rule's methods, edited
            offers = self.attempt(None, lambda: " ".join(
                methods.netsh_out(m) for m in expand_methods(p.respond_security)))
            out.append(f"netsh ipsec static set defaultrule policy={q(p.name)} "
                       f"qmsecmethods={q(offers)}{auth}")
        for rule in p.rules:
            f = self.attempt(rule, lambda: self._netsh_filter(rule))
            act = self.attempt(rule, lambda: self._netsh_action(rule))
            out += [f"netsh ipsec static add filterlist name={q(rule.name)}", f, act,
                    f"netsh ipsec static add rule name={q(rule.name)} policy={q(p.name)} "
                    f"filterlist={q(rule.name)} filteraction={q(rule.name + ' action')}"
                    + (auth if rule.negotiates else "")]
        out += [f"netsh ipsec static set policy name={q(p.name)} assign=yes", exempt]
        return out

    def _netsh_filter(self, rule: Rule) -> str:
        f = rule.filter
        (src, smask), (dst, dmask) = self.address(rule, f.source), self.address(rule, f.destination)
        text = (f"netsh ipsec static add filter filterlist={_quote(rule.name)} srcaddr={src} "
                f"dstaddr={dst}" + (f" srcmask={smask}" if smask else "")
                + (f" dstmask={dmask}" if dmask else ""))
        text += f" protocol={_protocol_word(f.protocol)}"
        if f.source_port or f.destination_port:
            text += f" srcport={f.source_port or 0} dstport={f.destination_port or 0}"
        return text + " mirrored=yes"

    def _netsh_action(self, rule: Rule) -> str:
        head = f"netsh ipsec static add filteraction name={_quote(rule.name + ' action')}"
        if not rule.negotiates:
            return f"{head} action={rule.action.value}"
        pfs = "no"
        if rule.pfs_group:
            groups = {m.dh_group for m in self.t.ike_methods}
            if groups != {rule.pfs_group}:
                raise Refusal(f"pfs: {rule.pfs_group}: netsh's qmpfs=yes reuses the Main Mode DH "
                              f"group; give ike.methods with group {rule.pfs_group} only")
            pfs = "yes"
        _windows_2003_algorithms(rule)
        offers = " ".join(methods.netsh_out(m) for m in expand(rule))
        return (f"{head} action=negotiate inpass={_yn(rule.inbound_passthrough)} "
                f"soft={_yn(rule.action is Action.REQUEST)} qmpfs={pfs} "
                f"qmsecmethods={_quote(offers)}")

    # ---- ipseccmd ------------------------------------------------------------------------------

    def _ipseccmd(self) -> list[str]:
        p, q = self.policy, _quote
        exempt = (r"reg add HKLM\SYSTEM\CurrentControlSet\Services\IPSEC /v NoDefaultExempt "
                  f"/t REG_DWORD /d {self.host.exemptions} /f")
        if p.builtin:
            return [f"ipseccmd -w REG -p {q(WINDOWS_NAMES[p.name])} -x", exempt]
        if not p.respond:
            self.refuse(None, "default_response: false: ipseccmd cannot turn off the default "
                        "response rule of a policy it creates")
        elif p.respond_security:
            self.refuse(None, "default_response: {security: ...}: ipseccmd cannot set the "
                        "default response rule's methods; export with netsh")
        out = [f"rem {p.description}"] if p.description else []
        mm = ""
        if self.t.ike_methods:
            mm = " -1s " + self.attempt(None, lambda: methods.mm_out(self.t.ike_methods, "SHA"))
        if self.t.ike_lifetime_minutes:
            mm += f" -1k {self.t.ike_lifetime_minutes * 60}S"
        auth = f' -a PRESHARE:"{PSK}"' if self.t.auth_method == "psk" else f' -a CERT:"{ROOTCA}"'
        for rule in p.rules:
            f = self.attempt(rule, lambda: self._ipseccmd_filter(rule))
            n = self.attempt(rule, lambda: self._ipseccmd_offers(rule))
            line = f"ipseccmd -w REG -p {q(p.name)} -r {q(rule.name)} -f {f} -n {n}"
            if rule.negotiates:
                line += (" -soft" if rule.action is Action.REQUEST else "") + auth
            out.append(line + mm)
            mm = ""
        if mm:  # a policy without rules still carries its Main Mode settings
            out.append(f"ipseccmd -w REG -p {q(p.name)}{mm}")
        out += [f"ipseccmd -w REG -p {q(p.name)} -x", exempt]
        return out

    def _ipseccmd_filter(self, rule: Rule) -> str:
        f = rule.filter

        def end(e: Endpoint, port: int | None) -> str:
            addr, mask = self.address(rule, e)
            addr = {"me": "0", "any": "*"}.get(addr, addr)
            return addr + (f"/{mask}" if mask else "") + (f":{port}" if port else "")
        text = end(f.source, f.source_port) + "+" + end(f.destination, f.destination_port)
        if f.protocol:
            text += ("" if f.destination_port else ":") + ":" + _protocol_word(f.protocol)
        return text

    def _ipseccmd_offers(self, rule: Rule) -> str:
        if not rule.negotiates:
            return {"permit": "PASS", "block": "BLOCK"}[rule.action.value]
        _windows_2003_algorithms(rule)
        offers = [methods.ipseccmd_out(m, rule.pfs_group) for m in expand(rule)]
        return " ".join((["INPASS"] if rule.inbound_passthrough else []) + offers)

    # ---- netsh advfirewall consec --------------------------------------------------------------

    def _consec(self) -> list[str]:
        p = self.policy
        if p.builtin:
            return []
        if p.respond:
            self.refuse(None, "connection security rules have no default response rule: set "
                        "default_response: false and verify again")
        if self.t.ike_methods or self.t.ike_lifetime_minutes:
            self.refuse(None, "ike.methods / lifetime_minutes: Main Mode settings are global on "
                        "Windows (netsh advfirewall set global mainmode) and not exported")
        if self.host.exemptions != 3:
            self.refuse(None, f"exemptions {self.host.exemptions}: connection security rules "
                        "have no NoDefaultExempt setting to write; only 3 (IKE) is exported")
        return [self.attempt(r, lambda r=r: self._consec_rule(r)) for r in p.rules
                if not r.tunnel_endpoint]

    def _consec_rule(self, rule: Rule) -> str:
        f = rule.filter
        if f.destination.kind == "me" and f.source.kind != "me":
            remote, local_port, remote_port = f.source, f.destination_port, f.source_port
        elif f.source.kind == "me":
            remote, local_port, remote_port = f.destination, f.source_port, f.destination_port
        else:
            raise Refusal("neither side is me")
        addr, mask = self.address(rule, remote)
        if mask:
            addr = str(ipaddress.IPv4Network(f"{addr}/{mask}"))
        action = next((k for k, v in ACTIONS.items() if v == (
            rule.action.value, rule.inbound_passthrough,
            rule.fallback_to_clear if rule.negotiates else False)), None)
        if rule.action is Action.BLOCK:
            raise Refusal("action: block: connection security rules have no Block action "
                          "(a firewall rule blocks)")
        if action is None:
            raise Refusal("require with inbound_passthrough (inbound request, outbound require) "
                          "has no consec action")
        text = (f"netsh advfirewall consec add rule name={_quote(rule.name)} endpoint1=any "
                f"endpoint2={addr} action={action}")
        if f.protocol:
            text += f" protocol={'icmpv4' if f.protocol == 'icmp' else f.protocol}"
        if local_port:
            text += f" port1={local_port}"
        if remote_port:
            text += f" port2={remote_port}"
        if rule.negotiates:
            text += (f' auth1=computerpsk auth1psk="{PSK}"' if self.t.auth_method == "psk"
                     else f' auth1=computercert auth1ca="{ROOTCA}"')
            if rule.pfs_group:
                group = {v: k for k, v in PFS.items()}.get(rule.pfs_group)
                if group is None:
                    raise Refusal(f"pfs: {rule.pfs_group}: consec has DH groups 1, 2, 14 and "
                                  "ECDH P-256/P-384 (19, 20)")
                text += f" qmpfs={group}"
            text += " qmsecmethods=" + ",".join(methods.consec_out(m) for m in expand(rule))
        return text


def expand(rule: Rule) -> list[SecurityMethod]:
    """The rule's offers with the lab's defaults written out: what charon actually proposes
    (lab.compile.proposals), so the exported script offers exactly what was verified."""
    return expand_methods(rule_methods(rule))


def expand_methods(offers) -> list[SecurityMethod]:
    """Security methods with the lab's default algorithms written out."""
    out: list[SecurityMethod] = []
    for m in offers:
        if m.protocol is Security.AH:
            found = [SecurityMethod(Security.AH, None, p, m.lifetime_seconds,
                                    m.lifetime_kilobytes) for p in _ah(m)]
        else:
            found = []
            for p in _esp(m):
                enc, _, integ = p.partition("-")
                found.append(SecurityMethod(Security.ESP, enc, integ or None, m.lifetime_seconds,
                                            m.lifetime_kilobytes))
        out += [x for x in found if x not in out]
    return out


def _windows_2003_algorithms(rule: Rule) -> None:
    if any(m.encryption is None and m.integrity is None for m in rule_methods(rule)):
        raise Refusal("security: esp/ah leaves the algorithms to the lab (AES-GCM-256, "
                      "AES-256/SHA-256, AH SHA-256), which Windows Server 2003 does not have; "
                      "name them, like {protocol: esp, encryption: 3des, integrity: sha1}")


def _quote(text: str) -> str:
    return f'"{text}"'


def _yn(flag: bool) -> str:
    return "yes" if flag else "no"


def _protocol_word(protocol: str | None) -> str:
    return {None: "ANY", "tcp": "TCP", "udp": "UDP", "icmp": "ICMP"}.get(protocol, str(protocol))
