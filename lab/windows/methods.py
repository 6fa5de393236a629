"""Security methods in each Windows syntax <-> the lab's offers, both ways, exactly or not at all.

netsh 2003:   ESP[3DES,SHA1]:100000k/3600s  AH[MD5]          (ConfAlg DES|3DES|None, MD5|SHA1|None)
ipseccmd:     ESP[3DES,SHA]3600S/100000K  AH[MD5]            (SHA means SHA-1)
consec:       esp:sha1-3des+60min+100000kb  ah:sha1          (integrity first, then encryption)
Main Mode:    netsh 3DES-SHA1-2, ipseccmd 3DES-SHA-2 (DH group 1, 2, or 3 = 2048-bit = group 14)
"""

from __future__ import annotations

import re

from lab.model.topology import IkeMethod, Security, SecurityMethod
from lab.windows.script import Refusal

_AH_ESP = "AH+ESP (AH around ESP) cannot be reproduced: strongSwan negotiates AH or ESP on an SA"
_OLD_CONF = {"des": "des", "3des": "3des", "none": "null"}
_OLD_INTEG = {"md5": "md5", "sha1": "sha1", "none": None}
_MM_GROUPS = {"1": 1, "2": 2, "3": 14}  # Windows 2003: Low (1), Medium (2), High (2048-bit)


def _raw(protocol: str, encryption: str | None, integrity: str | None,
         seconds: int | None, kilobytes: int | None) -> dict:
    out: dict = {"protocol": protocol}
    if encryption:
        out["encryption"] = encryption
    if integrity:
        out["integrity"] = integrity
    if seconds or kilobytes:
        out["lifetime"] = {k: v for k, v in (("seconds", seconds), ("kilobytes", kilobytes)) if v}
    return out


def _old_esp(conf: str, auth: str, text: str) -> tuple[str, str | None]:
    conf, auth = conf.lower(), auth.lower()
    if auth == "sha":
        auth = "sha1"
    if conf not in _OLD_CONF or auth not in _OLD_INTEG:
        raise Refusal(f"{text}: unknown algorithm (ConfAlg DES, 3DES or None; AuthAlg MD5, "
                      "SHA1 or None)")
    if auth == "none":
        raise Refusal(f"{text}: ESP without integrity is refused by the lab (strongSwan's ESP "
                      "with encryption needs integrity); add MD5 or SHA1")
    return _OLD_CONF[conf], _OLD_INTEG[auth]


def _old_ah(hash_: str, text: str) -> str:
    h = {"sha": "sha1"}.get(hash_.lower(), hash_.lower())
    if h not in ("md5", "sha1"):
        raise Refusal(f"{text}: AH hash must be MD5 or SHA1")
    return h


# ---- netsh ipsec static ------------------------------------------------------------------------

_NETSH = re.compile(r"^(?:ESP\[(\w+),(\w+)\]|AH\[(\w+)\])(?::(\d+)k/(\d+)s)?$", re.IGNORECASE)


def netsh_in(value: str) -> list[dict]:
    out = []
    for text in value.split():
        if re.match(r"^AH\[\w+\]\+ESP", text, re.IGNORECASE):
            raise Refusal(f"{text}: {_AH_ESP}")
        m = _NETSH.match(text)
        if not m:
            raise Refusal(f"{text}: not a security method (ESP[ConfAlg,AuthAlg]:k/s or "
                          "AH[HashAlg]:k/s)")
        kb, s = (int(m.group(4)), int(m.group(5))) if m.group(4) else (None, None)
        if m.group(1):
            enc, integ = _old_esp(m.group(1), m.group(2), text)
            out.append(_raw("esp", enc, integ, s, kb))
        else:
            out.append(_raw("ah", None, _old_ah(m.group(3), text), s, kb))
    return out


def netsh_out(m: SecurityMethod) -> str:
    text = _old_method(m, "SHA1", "netsh ipsec static")
    return text + _both_lifetimes(m, "{kb}k/{s}s", ":")


def _old_method(m: SecurityMethod, sha: str, what: str) -> str:
    """ESP[3DES,SHA1] / AH[MD5]: Windows 2000/2003 know DES, 3DES, MD5 and SHA-1 only."""
    names = {"des": "DES", "3des": "3DES", "null": "None", "md5": "MD5", "sha1": sha}
    if m.protocol is Security.AH:
        if m.integrity not in ("md5", "sha1"):
            raise Refusal(f"AH with {m.integrity}: {what} (Windows Server 2003) has MD5 and "
                          "SHA1 only")
        return f"AH[{names[m.integrity]}]"
    if m.encryption not in ("des", "3des", "null") or m.integrity not in ("md5", "sha1"):
        raise Refusal(f"ESP {m.encryption}/{m.integrity}: {what} (Windows Server 2003) has DES, "
                      "3DES or None with MD5 or SHA1 only")
    return f"ESP[{names[m.encryption]},{names[m.integrity]}]"


def _both_lifetimes(m: SecurityMethod, form: str, lead: str) -> str:
    if not m.lifetime_seconds and not m.lifetime_kilobytes:
        return ""
    if not (m.lifetime_seconds and m.lifetime_kilobytes):
        raise Refusal("a lifetime in seconds only or kilobytes only: Windows writes both; give "
                      "lifetime: {seconds: N, kilobytes: N}")
    return lead + form.format(kb=m.lifetime_kilobytes, s=m.lifetime_seconds)


def mm_in(value: str, sha: str = "SHA1") -> list[dict]:
    """Main Mode methods `3DES-SHA1-2 DES-MD5-1` -> ike.methods."""
    out = []
    for text in value.split():
        parts = text.upper().split("-")
        if len(parts) != 3 or parts[0] not in ("DES", "3DES") or parts[1] not in ("MD5", sha) \
                or parts[2] not in _MM_GROUPS:
            raise Refusal(f"{text}: not a Main Mode method (like 3DES-{sha}-2: DES or 3DES, MD5 "
                          f"or {sha}, DH group 1, 2 or 3)")
        out.append({"encryption": parts[0].lower(), "integrity": "md5" if parts[1] == "MD5"
                    else "sha1", "dh_group": _MM_GROUPS[parts[2]]})
    return out


def mm_out(methods: tuple[IkeMethod, ...], sha: str = "SHA1") -> str:
    groups = {g: w for w, g in _MM_GROUPS.items()}
    out = []
    for m in methods:
        if m.encryption not in ("des", "3des") or m.integrity not in ("md5", "sha1") \
                or m.dh_group not in groups:
            raise Refusal(f"Main Mode method {m.encryption}-{m.integrity}-group {m.dh_group}: "
                          "Windows Server 2003 has DES/3DES, MD5/SHA1, DH groups 1, 2, 14")
        out.append(f"{m.encryption.upper()}-{sha if m.integrity == 'sha1' else 'MD5'}-"
                   f"{groups[m.dh_group]}")
    return " ".join(out)


# ---- ipseccmd / ipsecpol -----------------------------------------------------------------------

_IPSECCMD = re.compile(r"^(?:ESP\[(\w+),(\w+)\]|AH\[(\w+)\])((?:\d+[KS])(?:/\d+[KS])?)?(P\d*)?$",
                       re.IGNORECASE)


def ipseccmd_in(texts: list[str]) -> tuple[list[dict], int | None]:
    """`-n` offers -> (offers, PFS group). PFS is written per offer but is one setting."""
    out, pfs = [], set()
    for text in texts:
        if re.match(r"^AH\[\w+\]\+ESP", text, re.IGNORECASE):
            raise Refusal(f"{text}: {_AH_ESP}")
        m = _IPSECCMD.match(text)
        if not m:
            raise Refusal(f"{text}: not a negotiation policy (ESP[ConfAlg,AuthAlg]RekeyPFS or "
                          "AH[HashAlg]RekeyPFS, or PASS, BLOCK, INPASS)")
        s = kb = None
        for part in (m.group(4) or "").split("/"):
            if part:
                n, unit = int(part[:-1]), part[-1].upper()
                s, kb = (n, kb) if unit == "S" else (s, n)
        if (s is None) != (kb is None):
            raise Refusal(f"{text}: give both lifetimes (like 3600S/100000K)")
        flag = (m.group(5) or "").upper()
        if flag == "P":
            raise Refusal(f"{text}: PFS without a group uses the Main Mode group; write P1 or P2")
        if flag and flag not in ("P1", "P2"):
            raise Refusal(f"{text}: PFS group must be P1 or P2")
        pfs.add(int(flag[1:]) if flag else None)
        if m.group(1):
            enc, integ = _old_esp(m.group(1), m.group(2), text)
            out.append(_raw("esp", enc, integ, s, kb))
        else:
            out.append(_raw("ah", None, _old_ah(m.group(3), text), s, kb))
    if len(pfs) > 1:
        raise Refusal("PFS differs between offers; the lab has one PFS setting per rule")
    return out, pfs.pop() if pfs else None


def ipseccmd_out(m: SecurityMethod, pfs: int | None) -> str:
    text = _old_method(m, "SHA", "ipseccmd").replace("SHA1", "SHA")
    text += _both_lifetimes(m, "{s}S/{kb}K", "")
    if pfs:
        if pfs not in (1, 2):
            raise Refusal(f"pfs: {pfs}: ipseccmd has PFS groups 1 and 2 only")
        text += f"P{pfs}"
    return text


# ---- netsh advfirewall consec ------------------------------------------------------------------

_CONSEC_INTEG = {"md5": "md5", "sha1": "sha1", "sha256": "sha256"}
_CONSEC_ENC = {"des": "des", "3des": "3des", "aes128": "aes128", "aes192": "aes192",
               "aes256": "aes256", "none": "null"}
_GCM = {"aesgcm128": "aes128gcm16", "aesgcm256": "aes256gcm16"}
_CONSEC = re.compile(r"^(esp|ah|authnoencap):([a-z0-9]+)(?:-([a-z0-9]+))?"
                     r"(?:\+(\d+)min)?(?:\+(\d+)kb)?$")


def consec_in(value: str) -> list[dict]:
    if value.lower() == "default":
        raise Refusal("qmsecmethods=default: Windows' default offers are not written in the "
                      "script; name them (like esp:sha1-aes256)")
    out = []
    for text in value.lower().split(","):
        if "+esp:" in text:
            raise Refusal(f"{text}: {_AH_ESP}")
        m = _CONSEC.match(text)
        if not m:
            raise Refusal(f"{text}: not a quick mode method (esp:integrity-encryption+Nmin+Nkb "
                          "or ah:integrity+Nmin+Nkb)")
        kind, integ, enc, minutes, kb = m.groups()
        if kind == "authnoencap":
            raise Refusal(f"{text}: authnoencap authenticates but puts no packet in AH or ESP; "
                          "the lab has no such method")
        seconds = int(minutes) * 60 if minutes else None
        if (seconds is None) != (kb is None):
            raise Refusal(f"{text}: give both lifetimes (+60min+100000kb) or neither")
        if kind == "ah":
            if enc or integ not in _CONSEC_INTEG:
                raise Refusal(f"{text}: AH takes one integrity algorithm: md5, sha1 or sha256")
            out.append(_raw("ah", None, integ, seconds, int(kb) if kb else None))
        elif integ in _GCM or enc in _GCM:
            if integ != enc:
                raise Refusal(f"{text}: AES-GCM must be both integrity and encryption")
            out.append(_raw("esp", _GCM[enc], None, seconds, int(kb) if kb else None))
        elif integ in _CONSEC_INTEG and enc in _CONSEC_ENC:
            out.append(_raw("esp", _CONSEC_ENC[enc], integ, seconds, int(kb) if kb else None))
        else:
            raise Refusal(f"{text}: no lab equivalent (integrity md5, sha1, sha256, aesgcm128, "
                          "aesgcm256; encryption des, 3des, aes128, aes192, aes256, none)")
    return out


def consec_out(m: SecurityMethod) -> str:
    gcm = {v: k for k, v in _GCM.items()}
    enc = {v: k for k, v in _CONSEC_ENC.items()}
    if m.protocol is Security.AH:
        if m.integrity not in _CONSEC_INTEG:
            raise Refusal(f"AH with {m.integrity}: consec has md5, sha1 and sha256")
        text = f"ah:{m.integrity}"
    elif m.encryption in gcm:
        text = f"esp:{gcm[m.encryption]}-{gcm[m.encryption]}"
    elif m.encryption in enc and m.integrity in _CONSEC_INTEG:
        text = f"esp:{m.integrity}-{enc[m.encryption]}"
    else:
        raise Refusal(f"ESP {m.encryption}/{m.integrity}: no consec equivalent")
    if m.lifetime_seconds and m.lifetime_seconds % 60:
        raise Refusal(f"lifetime {m.lifetime_seconds} s: consec counts lifetimes in minutes")
    return text + _both_lifetimes(m, "+{s}min+{kb}kb", "").replace(
        f"+{m.lifetime_seconds}min", f"+{(m.lifetime_seconds or 0) // 60}min")
