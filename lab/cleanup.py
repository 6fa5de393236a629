"""Find and remove what killed runs left behind: guests, daemons, namespaces, run directories.

Every run owns a directory `<state>/<run_id>/` holding `owner.pid`; every process a run starts
carries LAB_RUN_ID in its environment (the guest also has `umid=lab-<run_id>` on its command
line), and every namespace is named `lab-<run_id>-h<index>` (or `-sw`). A run whose owner is gone is stale.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


def state_dir() -> Path:
    # Anywhere (under /tmp or /run too: the guest binds the run directory back), but without
    # whitespace: the guest's init script and UML's own directory go on a kernel command line.
    path = os.environ.get("LAB_STATE_DIR", "/var/tmp/ipsec-lab")
    if any(c.isspace() for c in path):
        from lab.errors import LabError
        raise LabError(f"LAB_STATE_DIR: {path!r} contains whitespace, which UML's kernel command line "
                       "cannot carry; choose a directory without")
    return Path(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def runs() -> dict[str, bool]:
    """run_id -> is its owner still alive?"""
    out = {}
    base = state_dir()
    if base.is_dir():
        for d in base.iterdir():
            try:
                owner = int((d / "owner.pid").read_text())
            except (OSError, ValueError):
                owner = -1
            out[d.name] = owner > 0 and _alive(owner)
    return out


def processes_of(run_ids: set[str]) -> list[int]:
    """Processes started by these runs, found by their environment or UML's command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        tags = {e[len(b"LAB_RUN_ID="):].decode() for e in environ if e.startswith(b"LAB_RUN_ID=")}
        tags |= {a[len(b"umid=lab-"):].decode() for a in cmdline if a.startswith(b"umid=lab-")}
        if tags & run_ids:
            found.append(int(entry.name))
    return found


def _end(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)


def namespaces_of(run_ids: set[str]) -> list[str]:
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return [n for n in names if n.startswith("lab-") and n.split("-")[1] in run_ids]


def sweep(on_progress=None, everything: bool = False) -> list[str]:
    """Remove stale runs (or, with `everything`, all runs). Returns what was removed."""
    stale = {rid for rid, alive in runs().items() if everything or not alive}
    # Namespaces of runs whose directory is already gone are stale too.
    try:
        for n in os.listdir("/run/netns"):
            parts = n.split("-")
            if n.startswith("lab-") and len(parts) >= 3 and (everything or parts[1] not in runs()):
                stale.add(parts[1])
    except FileNotFoundError:
        pass
    removed = []
    if not stale:
        return removed
    pids = processes_of(stale)
    _end(pids)
    removed += [f"process {p}" for p in pids]
    for ns in namespaces_of(stale):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        removed.append(f"namespace {ns}")
    for rid in stale:
        d = state_dir() / rid
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(f"run directory {d}")
    if removed and on_progress:
        on_progress({"phase": "cleanup", "message": "removed leftovers of killed runs: " + ", ".join(removed)})
    return removed
