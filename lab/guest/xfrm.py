"""Program the kernel where strongSwan has no knob: optional inbound templates, XFRM counters.

Runs inside the lab kernel. Windows' inbound passthrough accepts an unsecured packet that
matches a Negotiate filter while replies still go out protected. XFRM does exactly that with an
optional template (`level use`) on the inbound policy. charon installs every template as
required, so after it has installed its traps the lab rewrites the inbound policies of the
rules that ask for it, found by their unique priority.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import struct
import subprocess

from lab.guest.netns import inside, ip
from lab.guest.rtnl import NLM_F_REQUEST, NLMSG_ERROR


def inbound_policies(ns: str) -> list[dict]:
    """`ip xfrm policy list dir in`, one dict per policy: selector line, priority, templates."""
    text = subprocess.run(ip(ns, "xfrm", "policy", "list", "dir", "in"),
                          capture_output=True, text=True).stdout
    policies, cur = [], None
    for line in text.splitlines():
        if not line.startswith((" ", "\t")):
            cur = {"selector": line.strip(), "priority": None, "templates": []}
            policies.append(cur)
            continue
        words = line.split()
        if words[0] == "dir" and "priority" in words:
            cur["priority"] = int(words[words.index("priority") + 1])
        elif words[0] == "proto" and "reqid" in words:
            cur["templates"].append(line.strip())
    return policies


def _selector(line: str) -> str:
    return re.sub(r"\s+dev\s+\S+", "", line)  # `dev` in a listing is not part of what update takes


def relax_inbound(ns: str, priorities: list[int]) -> list[str]:
    """Make the inbound templates of the policies with these priorities optional. Returns the
    selectors changed, for the record."""
    wanted = set(priorities)
    if not wanted:
        return []  # nothing to relax: no `ip xfrm policy list` process (one per host adds up)
    commands, changed = [], []
    for p in inbound_policies(ns):
        if p["priority"] in wanted and p["templates"]:
            tmpls = " ".join(f"tmpl {t} level use" for t in p["templates"])
            commands.append(f"xfrm policy update {_selector(p['selector'])} dir in priority {p['priority']} {tmpls}")
            changed.append(p["selector"])
    if commands:
        res = subprocess.run(ip(ns, "-batch", "-"), input="\n".join(commands) + "\n",
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"relaxing inbound policies in {ns} failed: {res.stderr.strip()}")
    return changed


def stats(ns: str) -> dict[str, int]:
    """/proc/net/xfrm_stat of a namespace (the counters behind every XFRM drop)."""
    with inside(ns):
        with open("/proc/thread-self/net/xfrm_stat") as f:
            return {k: int(v) for k, v in (line.split() for line in f if line.strip())}


# ---- the SAs of a namespace, read over netlink (no process) -------------------------------------
# `ip -s xfrm state list nokeys` cost one process per host (0.1-0.2 s of the guest's one CPU
# each: 4-9 s with 40 hosts). The executor's own thread asks the kernel instead, in the host's
# namespace, and keeps only names and counters: the keys that follow an algorithm's name in
# the kernel's answer are never read.

NETLINK_XFRM = 6
XFRM_MSG_NEWSA, XFRM_MSG_GETSA = 0x10, 0x12
NLM_F_DUMP, NLMSG_DONE = 0x300, 3  # netlink's others: lab.guest.rtnl
USERSA_INFO = 224  # sizeof(struct xfrm_usersa_info) on 64-bit Linux
ALGORITHMS = {1: "auth", 2: "enc", 3: "comp", 18: "aead", 20: "auth-trunc"}  # XFRMA_ALG_*
XFRMA_ENCAP = 4
PROTOCOLS = {50: "esp", 51: "ah", 108: "comp", 6: "tcp", 17: "udp", 1: "icmp"}
MODES = {0: "transport", 1: "tunnel", 2: "ro", 3: "in_trigger", 4: "beet"}


def _address(raw: bytes, family: int) -> str:
    return str(ipaddress.ip_address(raw[:4] if family == 2 else raw[:16]))


def describe_sa(msg: bytes) -> str:
    """One struct xfrm_usersa_info and its attributes as `ip xfrm state list` would show them,
    without keys: addresses, SPI, mode, selector, algorithm names, encapsulation, counters."""
    family = struct.unpack_from("=H", msg, 212)[0]
    dst, src = _address(msg[56:72], family), _address(msg[80:96], family)
    spi, proto = struct.unpack_from(">I", msg, 72)[0], msg[76]
    reqid, mode = struct.unpack_from("=I", msg, 208)[0], msg[214]
    sel_dst, sel_src = _address(msg[0:16], family), _address(msg[16:32], family)
    dport, _, sport, _, _, plen_d, plen_s, sel_proto = struct.unpack_from(">HHHHHBBB", msg, 32)
    nbytes, packets = struct.unpack_from("=QQ", msg, 160)
    lines = [f"src {src} dst {dst}",
             f"\tproto {PROTOCOLS.get(proto, proto)} spi 0x{spi:08x} reqid {reqid} mode {MODES.get(mode, mode)}"]
    sel = f"\tsel src {sel_src}/{plen_s} dst {sel_dst}/{plen_d}"
    if sel_proto:
        sel += f" proto {PROTOCOLS.get(sel_proto, sel_proto)}"
        sel += f" sport {sport}" if sport else ""
        sel += f" dport {dport}" if dport else ""
    off = USERSA_INFO
    while off + 4 <= len(msg):
        length, kind = struct.unpack_from("=HH", msg, off)
        if length < 4:
            break
        kind &= 0x3fff  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if kind in ALGORITHMS:  # struct xfrm_algo*: the name first, then sizes and the key
            name = msg[off + 4:off + 68].split(b"\0", 1)[0].decode(errors="replace")
            lines.append(f"\t{ALGORITHMS[kind]} {name}")
        elif kind == XFRMA_ENCAP:
            etype, esport, edport = struct.unpack_from("=HHH", msg, off + 4)
            kind_name = {1: "espinudp-nonike", 2: "espinudp", 7: "espintcp"}.get(etype, str(etype))
            lines.append(f"\tencap type {kind_name} sport {socket.ntohs(esport)} dport {socket.ntohs(edport)}")
        off += (length + 3) & ~3
    if any(line.startswith("\tauth-trunc ") for line in lines):  # the kernel gives both; ip shows one
        lines = [line for line in lines if not line.startswith("\tauth ")]
    lines += [sel, f"\tlifetime current:\n\t  {nbytes}(bytes), {packets}(packets)"]
    return "\n".join(lines) + "\n"


def parse_dump(chunks: list[bytes]) -> tuple[list[str], bool]:
    """Netlink answers of a GETSA dump: each SA described, and whether the dump ended."""
    described, done = [], False
    for data in chunks:
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if length < 16:
                break
            body = data[off + 16:off + length]
            if kind == XFRM_MSG_NEWSA:
                described.append(describe_sa(body))
            elif kind == NLMSG_DONE:
                done = True
            elif kind == NLMSG_ERROR:
                errno_ = -struct.unpack_from("=i", body, 0)[0]
                if errno_:
                    raise OSError(errno_, os.strerror(errno_))
                done = True
            off += (length + 3) & ~3
    return described, done


def states(ns: str) -> str:
    """The namespace's XFRM SAs (ip's `xfrm state list nokeys` form), from one netlink dump."""
    with inside(ns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
    with s:
        s.settimeout(5)
        s.send(struct.pack("=IHHII", 16, XFRM_MSG_GETSA, NLM_F_REQUEST | NLM_F_DUMP, 1, 0))
        described, done = [], False
        while not done:
            more, done = parse_dump([s.recv(1 << 16)])
            described += more
    return "".join(described)
