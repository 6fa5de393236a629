"""Windows security methods -> strongSwan proposal strings.

Windows 2000/2003 offer ESP[3DES,SHA1], ESP[DES,MD5], AH[SHA1] ... with Diffie-Hellman groups 1
and 2; strongSwan 5.9 leaves DES, MD5 and MODP 768/1024 out of its `default` proposals, so the
lab always writes algorithms out explicitly. Methods the designer leaves open get modern ones.
"""

from __future__ import annotations

from lab.model.topology import IkeMethod, Rule, Security, SecurityMethod, Topology

DH_GROUPS = {1: "modp768", 2: "modp1024", 5: "modp1536", 14: "modp2048", 15: "modp3072",
             16: "modp4096", 19: "ecp256", 20: "ecp384", 21: "ecp521", 31: "curve25519"}
DEFAULT_IKE = ["aes256-sha256-modp2048"]
DEFAULT_ESP = ["aes256gcm16", "aes256-sha256"]
DEFAULT_AH = ["sha256"]
# What a Windows 2000/2003 default response rule accepts (its default security methods), so
# a Respond Only host can answer a Windows-era Request/Require server.
WINDOWS_RESPONSE_ESP = ["3des-sha1", "3des-md5", "des-sha1", "des-md5"]
WINDOWS_RESPONSE_AH = ["sha1", "md5"]


def ike_proposal(m: IkeMethod) -> str:
    return f"{m.encryption}-{m.integrity}-{DH_GROUPS[m.dh_group]}"


def ike_proposals(topology: Topology) -> list[str]:
    return [ike_proposal(m) for m in topology.ike_methods] or list(DEFAULT_IKE)


def _esp(m: SecurityMethod) -> list[str]:
    if m.encryption is None and m.integrity is None:
        return list(DEFAULT_ESP)
    enc = m.encryption or "aes256"
    if enc.endswith(("gcm16", "gcm12", "gcm8")):
        return [enc]  # AEAD: integrity is built in
    return [f"{enc}-{m.integrity or 'sha256'}"]


def _ah(m: SecurityMethod) -> list[str]:
    return [m.integrity] if m.integrity else list(DEFAULT_AH)


def methods(rule: Rule) -> list[SecurityMethod]:
    """The rule's offers; a bare Security (older loader output) means default algorithms."""
    return [m if isinstance(m, SecurityMethod) else SecurityMethod(m) for m in rule.security] \
        or [SecurityMethod(Security.ESP)]


def child_proposals(rule: Rule) -> dict[str, list[str]]:
    """`esp_proposals` and/or `ah_proposals` in the rule's order of preference, with session-key
    PFS appended to each as strongSwan expects (`3des-sha1-modp1024`)."""
    return method_proposals(methods(rule), f"-{DH_GROUPS[rule.pfs_group]}" if rule.pfs_group else "")


def method_proposals(offers, pfs: str = "") -> dict[str, list[str]]:
    """Security methods, in order, as `esp_proposals` and/or `ah_proposals`."""
    out: dict[str, list[str]] = {}
    for m in offers:
        key, props = ("esp_proposals", _esp(m)) if m.protocol is Security.ESP else ("ah_proposals", _ah(m))
        for p in props:
            if p + pfs not in out.get(key, []):
                out.setdefault(key, []).append(p + pfs)
    return out


def child_lifetimes(rule: Rule) -> dict[str, str]:
    """Windows Quick Mode lifetimes (seconds and kilobytes) as hard limits; rekey a little before."""
    first = next((m for m in methods(rule) if m.lifetime_seconds or m.lifetime_kilobytes), None)
    if not first:
        return {}
    out = {}
    if first.lifetime_seconds:
        out["life_time"] = f"{first.lifetime_seconds}s"
        out["rekey_time"] = f"{int(first.lifetime_seconds * 0.9)}s"
    if first.lifetime_kilobytes:
        out["life_bytes"] = str(first.lifetime_kilobytes * 1024)
        out["rekey_bytes"] = str(int(first.lifetime_kilobytes * 1024 * 0.9))
    return out
