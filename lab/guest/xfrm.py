"""Program the kernel where strongSwan has no knob: optional inbound templates, XFRM counters.

Runs inside the lab kernel. Windows' inbound passthrough accepts an unsecured packet that
matches a Negotiate filter while replies still go out protected. XFRM does exactly that with an
optional template (`level use`) on the inbound policy. charon installs every template as
required, so after it has installed its traps the lab rewrites the inbound policies of the
rules that ask for it, found by their unique priority.
"""

from __future__ import annotations

import re
import subprocess

from lab.guest.netns import inside, ip


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


def split_listing(text: str) -> tuple[str, str]:
    """`xfrm policy list` and `xfrm state list` in one output, in either order: a state block
    starts with `src ADDRESS`, a policy block with `src PREFIX/LEN` (socket policies too)."""
    state, policy, cur = [], [], None
    for line in text.splitlines(keepends=True):
        if line.startswith("src "):
            cur = policy if "/" in line.split()[1] else state
        (cur if cur is not None else state).append(line)
    return "".join(state), "".join(policy)


def stats(ns: str) -> dict[str, int]:
    """/proc/net/xfrm_stat of a namespace (the counters behind every XFRM drop)."""
    with inside(ns):
        with open("/proc/thread-self/net/xfrm_stat") as f:
            return {k: int(v) for k, v in (line.split() for line in f if line.strip())}
