"""`netsh advfirewall consec add rule` (Windows Vista / Server 2008 and later): connection
security rules, all of one script making one policy named after the script file.

Syntax: "Netsh AdvFirewall Consec Commands" (Windows Server 2008 R2 Technical Reference): add
rule name= endpoint1= endpoint2= action=requireinrequestout|requestinrequestout|
requireinrequireout|requireinclearout|noauthentication [mode=] [port1=] [port2=] [protocol=]
[auth1=computerkerb|computercert|computerpsk|...] [qmpfs=] [qmsecmethods=] ...
Endpoint 1 is this computer's side (`any` = all its addresses), endpoint 2 the peer's.
Connection security rules have no default response rule: the policy gets default_response: false.
"""

from __future__ import annotations

from lab.windows import methods
from lab.windows.draft import Draft, DraftPolicy, DraftRule
from lab.windows.netsh import address
from lab.windows.script import Command, Refusal, slug, tagged, yes_no

TAGS = ("name", "endpoint1", "endpoint2", "action", "description", "mode", "enable", "profile",
        "type", "localtunnelendpoint", "remotetunnelendpoint", "port1", "port2", "protocol",
        "interfacetype", "auth1", "auth1psk", "auth1ca", "auth1healthcert", "auth1ecdsap256ca",
        "auth1ecdsap256healthcert", "auth1ecdsap384ca", "auth1ecdsap384healthcert", "auth2",
        "auth2ca", "auth2healthcert", "auth2ecdsap256ca", "auth2ecdsap256healthcert",
        "auth2ecdsap384ca", "auth2ecdsap384healthcert", "qmpfs", "qmsecmethods",
        "exemptipsecprotectedconnections", "applyauthz")
# action -> (lab action, inbound passthrough, fallback to clear)
ACTIONS = {
    "requireinrequireout": ("require", False, False),
    "requestinrequestout": ("request", True, True),
    "requireinrequestout": ("request", False, True),
    "noauthentication": ("permit", False, False),
}
PFS = {"dhgroup1": 1, "dhgroup2": 2, "dhgroup14": 14, "ecdhp256": 19, "ecdhp384": 20}
_PROTOCOLS = {"tcp": "tcp", "udp": "udp", "icmpv4": "icmp", "any": None}


class ConsecReader:
    def __init__(self, draft: Draft, policy_name: str, me: set[str]):
        self.draft, self.me = draft, me  # me: this host's addresses, when known
        self.policy_name = policy_name

    def feed(self, cmd: Command, words: list[str]) -> None:
        verb = [w.lower() for w in words[:2]]
        if verb[:1] == ["show"]:
            return
        if verb != ["add", "rule"]:
            raise Refusal(f"netsh advfirewall consec {' '.join(words[:2])}: only `add rule` "
                          "is read")
        a = tagged(words[2:], TAGS)
        for key in ("name", "endpoint1", "endpoint2", "action"):
            if not a.get(key):
                raise Refusal(f"{key}= is missing")
        self._checks(a)
        action = a["action"].lower()
        if action == "requireinclearout":
            raise Refusal("action=requireinclearout (inbound required, outbound clear) is one-way; "
                          "strongSwan protects both directions or neither")
        if action not in ACTIONS:
            raise Refusal(f"action={a['action']}: expected requireinrequireout, "
                          "requestinrequestout, requireinrequestout or noauthentication")
        kind, inpass, soft = ACTIONS[action]
        security, pfs = [], None
        if kind != "permit":
            self._auth(cmd, a)
            if "qmsecmethods" not in a:
                raise Refusal("no qmsecmethods: Windows' defaults are not in the script; list "
                              "them (like esp:sha1-aes256)")
            security = methods.consec_in(a["qmsecmethods"])
            qmpfs = a.get("qmpfs", "none").lower()
            if qmpfs == "mainmode":
                raise Refusal("qmpfs=mainmode reuses the Main Mode group; name the group "
                              "(dhgroup2, dhgroup14, ...)")
            if qmpfs != "none" and qmpfs not in PFS:
                raise Refusal(f"qmpfs={a['qmpfs']}: no lab equivalent (dhgroup1, dhgroup2, "
                              "dhgroup14, ecdhp256, ecdhp384 or none)")
            pfs = PFS.get(qmpfs)
        elif "qmsecmethods" in a or "qmpfs" in a or "auth1" in a:
            raise Refusal("noauthentication with auth1, qmpfs or qmsecmethods: the rule exempts "
                          "traffic from IPsec; remove them")
        proto = self._protocol(a.get("protocol", "any"))
        ports = [self._port(a, k) for k in ("port1", "port2")]
        if any(ports) and proto not in ("tcp", "udp"):
            raise Refusal("a port needs protocol=tcp or udp")
        local = self._end(a["endpoint1"], "endpoint1")
        if local != "any" and local not in self.me:
            raise Refusal(f"endpoint1={a['endpoint1']}: endpoint 1 is this computer; write any or "
                          "its own address (name the host: HOST=FILE, --host HOST=ADDRESS)")
        policy = self.draft.policies.setdefault(self.policy_name, DraftPolicy(
            self.policy_name, cmd.where, respond=False))
        name = slug(a["name"])
        if any(r.name == name for r in policy.rules):
            raise Refusal(f"a rule named {a['name']!r} is already added")
        policy.rules.append(DraftRule(name, cmd.where, "me", self._end(a["endpoint2"], "endpoint2"),
                                      proto, ports[0], ports[1], kind, security, inpass, soft, pfs))

    def _checks(self, a: dict) -> None:
        if a.get("mode", "transport").lower() != "transport":
            raise Refusal("mode=tunnel: tunnel rules are not imported")
        if "enable" in a and not yes_no("enable", a["enable"]):
            raise Refusal("enable=no: a disabled rule does nothing; delete it or enable it")
        for key, ok in (("profile", "any"), ("type", "static"), ("interfacetype", "any")):
            if a.get(key, ok).lower() != ok:
                raise Refusal(f"{key}={a[key]}: the lab has one network, always connected; only "
                              f"{key}={ok} maps exactly")
        for key in a:
            if key.startswith("auth2"):
                raise Refusal(f"{key}: second (user) authentication has no strongSwan "
                              "equivalent in the lab")
            if key.endswith("healthcert") or "ecdsa" in key or key in (
                    "exemptipsecprotectedconnections", "applyauthz", "localtunnelendpoint",
                    "remotetunnelendpoint"):
                raise Refusal(f"{key}= is not read by the importer")

    def _auth(self, cmd: Command, a: dict) -> None:
        auth = [x.strip().lower() for x in a.get("auth1", "").split(",") if x.strip()]
        if not auth:
            raise Refusal("no auth1: Windows then uses its default (Kerberos), which the lab "
                          "cannot do; say auth1=computercert or computerpsk")
        if "computerkerb" in auth:
            raise Refusal("auth1=computerkerb: the lab cannot authenticate IKE with Kerberos "
                          "(strongSwan has no GSS-API); use computercert")
        if len(auth) > 1:
            raise Refusal(f"auth1={a['auth1']}: the lab authenticates with one method")
        method = {"computerpsk": "psk", "computercert": "certificates"}.get(auth[0])
        if method is None:
            raise Refusal(f"auth1={auth[0]}: no lab equivalent (computercert or computerpsk)")
        self.draft.auth.append((method, cmd.where))

    @staticmethod
    def _protocol(value: str) -> str | int | None:
        low = value.lower()
        if low in _PROTOCOLS:
            return _PROTOCOLS[low]
        if low.isdigit() and int(low) <= 255:
            return {"6": "tcp", "17": "udp", "1": "icmp", "0": None}.get(low, int(low))
        raise Refusal(f"protocol={value}: expected tcp, udp, icmpv4, any or a number 0-255")

    @staticmethod
    def _port(a: dict, key: str) -> int | None:
        value = a.get(key, "any").lower()
        if value == "any":
            return None
        if not value.isdigit() or not 0 < int(value) <= 65535:
            raise Refusal(f"{key}={a[key]}: one port 1-65535 or any (ranges, lists and keywords "
                          "like RPC have no lab equivalent)")
        return int(value)

    @staticmethod
    def _end(value: str, tag: str) -> str:
        low = value.lower()
        if low in ("localsubnet", "dns", "dhcp", "wins", "defaultgateway"):
            raise Refusal(f"{tag}={value}: a keyword that follows the network's configuration; "
                          "write the address or subnet")
        if "," in value:
            raise Refusal(f"{tag}={value}: a list of addresses; the lab's filter has one "
                          "address or subnet per side (write one rule each)")
        if low == "any":
            return "any"
        base, _, prefix = value.partition("/")
        return address(base, prefix or None, tag)

    def finish(self) -> None:
        pass
