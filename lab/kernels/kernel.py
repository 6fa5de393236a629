"""Can this kernel carry IPsec? Probe by installing an ESP and an AH SA in a throwaway namespace.

`unshare -n` gives a nameless network namespace that vanishes with the process: nothing to
clean up and nothing touches the host's own namespace.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

# Fixed test keys for a probe SA that never carries traffic.
_PROBE = (
    "ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 mode transport "
    "aead 'rfc4106(gcm(aes))' 0x0102030405060708090a0b0c0d0e0f1011121314 128 && echo esp-ok; "
    "ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto ah spi 0x101 mode transport "
    "auth 'hmac(sha256)' 0x0102030405060708090a0b0c0d0e0f100102030405060708090a0b0c0d0e0f10 && echo ah-ok"
)


@dataclass(frozen=True)
class KernelSupport:
    esp: bool
    ah: bool
    detail: str

    @property
    def ipsec(self) -> bool:
        return self.esp and self.ah


def probe_host_kernel() -> KernelSupport:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return KernelSupport(False, False, "unshare or ip missing (util-linux, iproute2)")
    res = subprocess.run(["unshare", "-n", "sh", "-c", _PROBE], capture_output=True, text=True, timeout=20)
    out = res.stdout.split()
    return KernelSupport("esp-ok" in out, "ah-ok" in out, res.stderr.strip().splitlines()[0] if res.stderr.strip() else "")
