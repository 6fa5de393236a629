"""What the scripts said, already in topology terms but with Windows addresses.

Parsers fill a Draft; the mapper turns its addresses into host names and writes the topology.
A rule's `src`/`dst` are `me`, `any`, an IPv4 address or a subnet, as the script wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.windows.script import Where

BUILTIN_NAMES = {  # Windows' names of the three default policies -> the lab's built-ins
    "Client (Respond Only)": "client-respond-only",
    "Server (Request Security)": "server-request-security",
    "Secure Server (Require Security)": "secure-server-require-security",
}
WINDOWS_NAMES = {lab: win for win, lab in BUILTIN_NAMES.items()}


def builtin(name: str) -> str | None:
    """The lab built-in a Windows policy name means, ignoring case."""
    return next((lab for win, lab in BUILTIN_NAMES.items() if win.lower() == name.lower()), None)


@dataclass
class DraftRule:
    name: str
    where: Where
    src: str
    dst: str
    protocol: str | int | None = None  # tcp, udp, icmp or a number; None = any
    src_port: int | None = None
    dst_port: int | None = None
    action: str = "require"  # permit | block | require | request
    security: list[dict] = field(default_factory=list)
    inbound_passthrough: bool = False
    fallback_to_clear: bool = False
    pfs: int | None = None

    def raw(self, ends: dict[str, str]) -> dict:
        """The rule as a topology `rules:` item; `ends` renames addresses to hosts."""
        flt: dict = {"from": ends.get(self.src, self.src), "to": ends.get(self.dst, self.dst)}
        if self.protocol is not None:
            flt["protocol"] = self.protocol
        if self.dst_port:
            flt["port"] = self.dst_port
        if self.src_port:
            flt["src_port"] = self.src_port
        out: dict = {"name": self.name, "filter": flt, "action": self.action}
        if self.action in ("require", "request"):
            request = self.action == "request"
            if self.inbound_passthrough != request:  # the lab's default: request yes, require no
                out["inbound_passthrough"] = self.inbound_passthrough
            if request and not self.fallback_to_clear:
                out["fallback_to_clear"] = False
            if self.pfs:
                out["pfs"] = self.pfs
            out["security"] = list(self.security)
        return out


@dataclass
class DraftPolicy:
    name: str
    where: Where
    description: str = ""
    respond: bool = True  # the default response rule
    rules: list[DraftRule] = field(default_factory=list)
    respond_security: list[dict] = field(default_factory=list)  # its methods, when the script set them

    def raw(self, ends: dict[str, str]) -> dict:
        out: dict = {}
        if self.description:
            out["description"] = self.description
        if not self.respond:
            out["default_response"] = False
        elif self.respond_security:
            out["default_response"] = {"security": list(self.respond_security)}
        out["rules"] = [r.raw(ends) for r in self.rules]
        return out


@dataclass
class Draft:
    """Everything one script configures on the host that runs it."""

    file: str
    policies: dict[str, DraftPolicy] = field(default_factory=dict)
    assigned: list[tuple[str, Where]] = field(default_factory=list)  # user or built-in names
    exemptions: int | None = None  # NoDefaultExempt (ipsecexempt)
    auth: list[tuple[str, Where]] = field(default_factory=list)  # psk | certificates
    ike_version: int | None = None
    ike_methods: list[dict] | None = None
    ike_lifetime_minutes: int | None = None
    problems: list[str] = field(default_factory=list)

    def refuse(self, where: Where, reason: str) -> None:
        self.problems.append(f"{where}: {reason}")

    def set_ike(self, where: Where, methods: list[dict] | None, minutes: int | None) -> None:
        """Main Mode settings are per policy on Windows, per topology in the lab: one value."""
        for key, value in (("ike_methods", methods), ("ike_lifetime_minutes", minutes)):
            if value is None:
                continue
            old = getattr(self, key)
            if old is not None and old != value:
                self.refuse(where, "Main Mode settings differ from an earlier policy's; the lab "
                            "has one set of Main Mode settings per topology")
            setattr(self, key, value)

    def ike_group(self) -> int | None:
        """The one Diffie-Hellman group of the Main Mode methods (what qmpfs=yes reuses)."""
        groups = {m["dh_group"] for m in self.ike_methods or []}
        return groups.pop() if len(groups) == 1 else None
