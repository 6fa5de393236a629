"""`ipseccmd` (Windows XP/2003 Support Tools) and `ipsecpol` (Windows 2000 Resource Kit): one
static-mode rule per command line.

Syntax: ipseccmd usage (Support Tools) and "IPSecPol Syntax" (Windows 2000 Resource Kit):
  ipseccmd [\\\\machine] -w REG -p PolicyName[:PollInterval] -r RuleName -f FilterList
           -n NegotiationPolicyList -a AuthMethodList -1s SecurityMethodList -1k ... -soft -x
A filter is `Src[/mask][:port]+Dst[/mask][:port][:protocol]`; `+` mirrors it (`=` is one way),
`0` is this computer, `*` any address. -n takes offers, or PASS, BLOCK, and INPASS.
"""

from __future__ import annotations

from lab.windows import methods
from lab.windows.draft import Draft, DraftPolicy, DraftRule, builtin
from lab.windows.netsh import address
from lab.windows.script import Command, Refusal, slug

_FLAGS_WITH_VALUE = ("-w", "-p", "-r", "-f", "-n", "-a", "-1s", "-1k", "-t", "-1e", "-1f")
_SWITCHES = ("-soft", "-lan", "-dialup", "-x", "-y", "-o", "-1p", "-confirm", "-u")
_LIST_FLAGS = ("-f", "-n", "-a", "-1s")  # take every word up to the next flag


class IpseccmdReader:
    def __init__(self, draft: Draft):
        self.draft = draft
        self.policies: dict[str, DraftPolicy] = {}

    def feed(self, cmd: Command, words: list[str]) -> None:
        if words and words[0].startswith("\\\\"):
            words = words[1:]  # \\machine: the computer it runs on, the lab's HOST=FILE
        flags = _flags(words)
        if "-w" not in flags:
            raise Refusal("dynamic mode (no -w): only static policies (-w REG) are imported")
        for bad, why in (("-t", "tunnel rules (-t) are not imported"),
                         ("-dialup", "-dialup: the lab has LAN connections only"),
                         ("-1p", "-1p (master key PFS) has no strongSwan equivalent"),
                         ("-y", "-y unassigns a policy: nothing to import"),
                         ("-o", "-o deletes a policy: nothing to import"),
                         ("-u", "-u deletes dynamic policies: nothing to import"),
                         ("-1e", "-1e (soft SA expiration time) is not modelled; the lab uses "
                          "Windows' 5 minute idle timer"),
                         ("-1f", "-1f (Main Mode filters) is not read; Main Mode follows the "
                          "rules' filters in the lab")):
            if bad in flags:
                raise Refusal(why)
        if "-p" not in flags:
            raise Refusal("-p is missing: static mode rules go into a named policy")
        name = flags["-p"][0]
        if ":" in name and name.rsplit(":", 1)[1].isdigit():
            name = name.rsplit(":", 1)[0]  # PolicyName:PollInterval
        if builtin(name):
            if set(flags) - {"-w", "-p", "-x"}:
                raise Refusal(f"{name!r} is a Windows default policy: it can only be assigned (-x)")
            if "-x" in flags:
                self.draft.assigned.append((builtin(name), cmd.where))
            return
        policy = self.policies.setdefault(name, DraftPolicy(slug(name), cmd.where))
        self.draft.policies[policy.name] = policy
        if "-1s" in flags or "-1k" in flags:
            mm = methods.mm_in(" ".join(flags["-1s"]), sha="SHA") if "-1s" in flags else None
            self.draft.set_ike(cmd.where, mm, _mm_lifetime(flags.get("-1k")))
        if "-f" in flags:
            self._rule(cmd, policy, flags)
        elif set(flags) - {"-w", "-p", "-x", "-1s", "-1k"}:
            raise Refusal("-f is missing: a rule needs its filters")
        if "-x" in flags:
            self.draft.assigned.append((policy.name, cmd.where))

    def _rule(self, cmd: Command, policy: DraftPolicy, flags: dict) -> None:
        if "-r" not in flags:
            raise Refusal("-r is missing: name the rule")
        offers = flags.get("-n", [])
        special = [o.upper() for o in offers if o.upper() in ("PASS", "BLOCK", "INPASS")]
        offers = [o for o in offers if o.upper() not in ("PASS", "BLOCK", "INPASS")]
        if "PASS" in special or "BLOCK" in special:
            if offers or len(special) > 1 or "-soft" in flags:
                raise Refusal("PASS or BLOCK stands alone in -n (no offers, INPASS or -soft)")
            action, security, pfs = special[0].replace("PASS", "permit").lower(), [], None
        else:
            if not offers:
                raise Refusal("no offers in -n: ipseccmd's default offers are not in the "
                              "script; list them (like ESP[3DES,SHA])")
            security, pfs = methods.ipseccmd_in(offers)
            action = "request" if "-soft" in flags else "require"
            self._auth(flags, cmd.where)
        filters = [_filter(f) for f in flags["-f"]]
        base = slug(flags["-r"][0])
        for i, (src, dst, proto, sport, dport) in enumerate(filters, 1):
            name = base if len(filters) == 1 else f"{base}-{i}"
            if any(r.name == name for r in policy.rules):
                raise Refusal(f"rule {flags['-r'][0]!r} is already in policy {policy.name!r}")
            policy.rules.append(DraftRule(name, cmd.where, src, dst, proto, sport, dport, action,
                                          security, "INPASS" in special, action == "request", pfs))

    def _auth(self, flags: dict, where) -> None:
        auth = flags.get("-a", [])
        if not auth:
            raise Refusal("no -a: ipseccmd then uses Kerberos, which the lab cannot do; add "
                          "-a PRESHARE:\"key\" or -a CERT:\"CA name\"")
        kinds = [a.split(":", 1)[0].upper() for a in auth]
        if "KERBEROS" in kinds:
            raise Refusal("-a KERBEROS: the lab cannot authenticate IKE with Kerberos "
                          "(strongSwan has no GSS-API); use PRESHARE or CERT")
        if len(kinds) > 1 or kinds[0] not in ("PRESHARE", "CERT"):
            raise Refusal(f"-a {' '.join(auth)}: the lab authenticates with one method, "
                          "PRESHARE or CERT")
        self.draft.auth.append(({"PRESHARE": "psk", "CERT": "certificates"}[kinds[0]],
                                where))

    def finish(self) -> None:
        pass


def _flags(words: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(words):
        flag = words[i].lower()
        if flag in _SWITCHES:
            out[flag] = []
            i += 1
        elif flag in _FLAGS_WITH_VALUE:
            values = []
            i += 1
            while i < len(words) and not (words[i].startswith("-") and words[i].lower() in
                                          _FLAGS_WITH_VALUE + _SWITCHES):
                values.append(words[i])
                i += 1
                if flag not in _LIST_FLAGS:
                    break
            if not values:
                raise Refusal(f"{words[i - 1]} needs a value")
            if flag in out:
                raise Refusal(f"{flag} is given twice")
            out[flag] = values
        else:
            raise Refusal(f"{words[i]}: not an ipseccmd flag the importer reads")
    return out


def _filter(text: str) -> tuple[str, str, str | int | None, int | None, int | None]:
    if "=" in text and "+" not in text:
        raise Refusal(f"{text}: '=' makes a one-way filter; strongSwan installs both directions "
                      "(write '+', mirrored)")
    if text.count("+") != 1:
        raise Refusal(f"{text}: not a filter (Src+Dst[:port][:protocol])")
    left, right = text.split("+")
    src, sport = _end(left, text)
    parts = right.split(":")
    dst, dport = _end(":".join(parts[:2]), text)
    proto: str | int | None = None
    if len(parts) > 3:
        raise Refusal(f"{text}: too many ':'")
    if len(parts) == 3 and parts[2]:
        p = parts[2].upper()
        proto = {"TCP": "tcp", "UDP": "udp", "ICMP": "icmp", "6": "tcp", "17": "udp",
                 "1": "icmp"}.get(p) or (int(p) if p.isdigit() and int(p) <= 255 else None)
        if proto is None:
            raise Refusal(f"{text}: protocol {parts[2]!r}: expected TCP, UDP, ICMP or a number")
        if proto == 0:
            proto = None
    if (sport or dport) and proto not in ("tcp", "udp"):
        raise Refusal(f"{text}: a port needs protocol TCP or UDP")
    return src, dst, proto, sport, dport


def _end(text: str, whole: str) -> tuple[str, int | None]:
    addr, _, port = text.partition(":")
    if port and not port.isdigit():
        raise Refusal(f"{whole}: port {port!r} is not a number")
    base, _, mask = addr.partition("/")
    base = {"0": "me", "*": "any"}.get(base, base)
    return address(base, mask or None, "filter"), (int(port) or None) if port else None


def _mm_lifetime(values: list[str] | None) -> int | None:
    if not values:
        return None
    minutes = None
    for part in values[0].upper().split("/"):
        if part.endswith("Q") and part[:-1] != "0":
            raise Refusal(f"-1k {values[0]}: a limit of Quick Modes per Main Mode has no "
                          "strongSwan equivalent")
        if part.endswith("S") and part[:-1].isdigit():
            seconds = int(part[:-1])
            if seconds % 60:
                raise Refusal(f"-1k {values[0]}: the lab counts the Main Mode lifetime in minutes")
            minutes = seconds // 60
        elif not part.endswith("Q"):
            raise Refusal(f"-1k {values[0]}: expected like 28800S or 0Q/28800S")
    return minutes
