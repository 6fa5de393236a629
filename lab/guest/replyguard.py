"""Apply an IKEv1 Respond Only host's reply guard and read how many replies it held back.

Runs inside the lab kernel: one iptables-legacy-restore per guarded host, one listing at
collect. The rules come ready-made from lab.compile.reply_guard (why they exist is there).
"""

from __future__ import annotations

import subprocess

from lab.guest.netns import run_in


def apply(ns: str, guard: dict) -> None:
    res = subprocess.run(run_in(ns, "iptables-legacy-restore"), input="\n".join(guard["rules"]) + "\n",
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"reply guard in {ns} failed: {res.stderr.strip()}")


def held(ns: str, guard: dict) -> int:
    """Packets the guard dropped: the counter of its chain's one rule."""
    res = subprocess.run(run_in(ns, "iptables-legacy", "-w", "-t", "filter", "-L", guard["chain"],
                                "-v", "-x", "-n"), capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"reply guard counters in {ns}: {res.stderr.strip()}")
    return parse_held(res.stdout)


def parse_held(listing: str) -> int:
    """`iptables -L CHAIN -v -x -n`: a chain header, a column header, one line per rule
    starting with its packet count."""
    rows = [line.split() for line in listing.splitlines()[2:] if line.strip()]
    return sum(int(r[0]) for r in rows if r and r[0].isdigit())
