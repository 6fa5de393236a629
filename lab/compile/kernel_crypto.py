"""The kernel algorithms a plan can negotiate, as scratch SAs that instantiate each one at boot.

The first SA of an algorithm makes the kernel look its crypto instances up by name
(`seqiv(rfc4106(gcm(aes)))`, `gcm(aes)`, `ctr(aes)`, `ghash`, `stdrng`, `hmac(sha512)`, ...)
and ask for a module for every name it does not know yet: about 18 requests for one AES-GCM
SA, each a modprobe process, 0.1-0.15 s apiece in a User-Mode Linux guest, one after the other.
Once an instance exists, later SAs find it and ask for nothing. So the guest adds one scratch
SA per algorithm combination the plan's proposals can yield, in one `ip -batch` process at
boot, and flushes them. strongSwan proposal keywords are mapped to the kernel's names here, as
charon's kernel-netlink plugin does; a keyword this table does not know is left out (that SA
then costs the module requests at run time: slower, never wrong).
"""

from __future__ import annotations

# strongSwan encryption keyword -> (kernel name, key bytes); AEAD ones carry their ICV bits.
_ENCRYPTION = {
    "3des": ("cbc(des3_ede)", 24), "des": ("cbc(des)", 8),
    "aes": ("cbc(aes)", 16), "aes128": ("cbc(aes)", 16), "aes192": ("cbc(aes)", 24), "aes256": ("cbc(aes)", 32),
    "null": ("ecb(cipher_null)", 0),
}
_AEAD = {"aes128gcm16": 128, "aes192gcm16": 128, "aes256gcm16": 128, "aes128gcm12": 96,
         "aes192gcm12": 96, "aes256gcm12": 96, "aes128gcm8": 64, "aes192gcm8": 64, "aes256gcm8": 64}
# strongSwan integrity keyword -> (kernel name, key bytes, truncation bits as charon installs it)
_INTEGRITY = {
    "md5": ("hmac(md5)", 16, 96), "sha1": ("hmac(sha1)", 20, 96), "sha": ("hmac(sha1)", 20, 96),
    "sha256": ("hmac(sha256)", 32, 128), "sha384": ("hmac(sha384)", 48, 192),
    "sha512": ("hmac(sha512)", 64, 256),
}
# The modules behind every name above (templates, ciphers, the RNG that seqiv and echainiv
# draw from), loaded in the guest's one boot-time modprobe so no instance waits for a module.
MODULES = ("authenc authencesn cbc ctr ecb gcm ghash-generic gf128mul seqiv echainiv hmac "
           "sha512_generic des_generic drbg jitterentropy_rng")


def _key(n: int) -> str:
    return "0x" + "".join(f"{(i * 7 + 1) & 0xff:02x}" for i in range(n)) if n else '""'


def _esp(tokens: list[str]) -> list[tuple[str, ...]]:
    aead = next((t for t in tokens if t in _AEAD), None)
    if aead:
        return [("aead", "rfc4106(gcm(aes))", int(aead[3:6]) // 8 + 4, _AEAD[aead])]
    enc = next((_ENCRYPTION[t] for t in tokens if t in _ENCRYPTION), None)
    integ = [_INTEGRITY[t] for t in tokens if t in _INTEGRITY]
    return [("enc", enc[0], enc[1], *i) for i in integ] if enc else []


def algorithms(plan) -> list[tuple[str, ...]]:
    """Every distinct kernel transform the plan's ESP and AH proposals can negotiate."""
    found: list[tuple[str, ...]] = []
    for host in plan.hosts:
        for conn in ((host.get("charon") or {}).get("conns") or {}).values():
            for child in (conn.get("children") or {}).values():
                for proposal in child.get("esp_proposals", []):
                    found += _esp(proposal.lower().split("-"))
                for proposal in child.get("ah_proposals", []):
                    found += [("ah", *_INTEGRITY[t]) for t in proposal.lower().split("-") if t in _INTEGRITY]
    # One SA per kernel instance: key lengths (aes128 or aes256) do not make another one.
    names = {}
    for t in found:
        names.setdefault(tuple(x for x in t if isinstance(x, str)), t)
    return list(names.values())


def _state(spi: int, transform: tuple[str, ...]) -> str:
    head = f"xfrm state add src 192.0.2.1 dst 192.0.2.2 proto {{}} spi {spi:#x} mode transport"
    kind = transform[0]
    if kind == "aead":
        _, name, key, icv = transform
        return f"{head.format('esp')} aead '{name}' {_key(key)} {icv}"
    if kind == "enc":
        _, name, key, auth, akey, trunc = transform
        return f"{head.format('esp')} enc '{name}' {_key(key)} auth-trunc '{auth}' {_key(akey)} {trunc}"
    _, auth, akey, trunc = transform
    return f"{head.format('ah')} auth-trunc '{auth}' {_key(akey)} {trunc}"


def warmup_batch(plan: dict) -> list[str]:
    """`ip -batch` lines: a scratch SA per transform (fixed test keys, documentation addresses,
    the guest's own namespace, where no lab host lives), then a flush of them all."""
    lines = [_state(0x1000 + i, t) for i, t in enumerate(algorithms(plan))]
    return lines + ["xfrm state flush"] if lines else []
