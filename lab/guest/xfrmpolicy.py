"""What a namespace's XFRM policies do with one flow's packets, decided as the kernel decides.

Pure functions over `ip xfrm policy list` text, so the finality watcher can tell, from the
policies the kernel really holds, whether a flow's own packets may leave a host in clear
(`out`) and whether they are accepted in clear where they arrive (`in`). The kernel takes, of
the policies whose selector matches, the one with the lowest priority value. Where the answer
depends on something not known here (a real client's ephemeral source port, or a lab probe's
before its socket is bound; an ICMP type, a policy bound to one device, two policies of one
priority that disagree), the answer is `unknown`, and the watcher then keeps waiting.
"""

from __future__ import annotations

import ipaddress
import socket

CLEAR, HELD, ACCEPTED, REFUSED, UNKNOWN = "clear", "held", "accepted", "refused", "unknown"


def _proto(word: str) -> int:
    if word.isdigit():
        return int(word)
    try:
        return socket.getprotobyname(word)
    except OSError:
        return -1  # a name this machine does not know: matches no probe


def parse(text: str) -> list[dict]:
    """One dict per policy: dir, action, priority, selector (src, dst, proto, ports, other
    constraints such as `dev` or an ICMP type) and whether a template is required."""
    policies, cur = [], None
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if not line[0].isspace():
            if words[0] != "src" or len(words) < 4:
                cur = None
                continue
            cur = {"src": ipaddress.ip_network(words[1], strict=False),
                   "dst": ipaddress.ip_network(words[3], strict=False),
                   "proto": None, "sport": None, "dport": None, "other": [],
                   "dir": None, "action": "allow", "priority": None, "templates": []}
            rest = words[4:]
            for key, value in zip(rest[::2], rest[1::2]):
                if key == "proto":
                    cur["proto"] = _proto(value)
                elif key in ("sport", "dport"):
                    cur[key] = int(value)
                elif key != "uid":
                    cur["other"].append(f"{key} {value}")  # dev, ICMP type/code, GRE key...
            policies.append(cur)
        elif cur is None:
            continue
        elif words[0] == "dir":
            cur["dir"] = words[1]
            if "action" in words:
                cur["action"] = words[words.index("action") + 1]
            if "priority" in words:
                cur["priority"] = int(words[words.index("priority") + 1])
        elif words[0] == "socket":
            cur["dir"] = "socket"  # a per-socket policy (charon's IKE sockets): not a lookup of ours
        elif words[0] == "tmpl":
            cur["templates"].append({"required": True, "reqid": None})
        elif words[0] == "proto" and cur["templates"] and "reqid" in words:
            cur["templates"][-1]["reqid"] = int(words[words.index("reqid") + 1])
        elif words[0] == "level" and cur["templates"]:
            cur["templates"][-1]["required"] = words[1] != "use"
    return policies


def _match(p: dict, src: str, dst: str, proto: int, sport: int | None, dport: int | None) -> bool | None:
    """True, False, or None where the policy's selector constrains something unknown here."""
    if ipaddress.ip_address(src) not in p["src"] or ipaddress.ip_address(dst) not in p["dst"]:
        return False
    if p["proto"] is not None and p["proto"] != proto:
        return False
    unknown = bool(p["other"])
    for key, value in (("sport", sport), ("dport", dport)):
        if p[key] is not None:
            if value is None:
                unknown = True
            elif p[key] != value:
                return False
    return None if unknown else True


def _outcome(p: dict | None, direction: str) -> str:
    required = bool(p) and p["action"] == "allow" and any(t["required"] for t in p["templates"])
    blocked = bool(p) and p["action"] == "block"
    if direction == "out":
        return HELD if required or blocked else CLEAR
    return REFUSED if required or blocked else ACCEPTED


def decide(policies: list[dict], direction: str, src: str, dst: str, proto: int,
           sport: int | None = None, dport: int | None = None) -> str:
    """For a packet in clear: `out` -> clear | held (it never leaves unprotected); `in` ->
    accepted | refused (dropped by the policy check); or unknown."""
    return choose(policies, direction, src, dst, proto, sport, dport)[0]


def choose(policies: list[dict], direction: str, src: str, dst: str, proto: int,
           sport: int | None = None, dport: int | None = None) -> tuple[str, dict | None]:
    """`decide`'s answer and the policy the kernel takes for the packet (None where no policy
    matches or the answer is unknown)."""
    sure, maybe = [], []
    for p in policies:
        if p["dir"] != direction or p["priority"] is None:
            continue
        m = _match(p, src, dst, proto, sport, dport)
        if m is True:
            sure.append(p)
        elif m is None:
            maybe.append(p)
    best = min(sure, key=lambda p: p["priority"], default=None)
    outcome = _outcome(best, direction)
    limit = best["priority"] if best else None
    rivals = [p for p in sure if p is not best and p["priority"] == limit]
    rivals += [p for p in maybe if limit is None or p["priority"] <= limit]
    if any(_outcome(p, direction) != outcome for p in rivals):
        return UNKNOWN, None
    return outcome, best
