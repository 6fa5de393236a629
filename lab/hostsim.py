"""An ESP-capable Linux host, played by a User-Mode Linux guest, to prove `--kernel host`.

Most users run the lab on a kernel that has ESP and AH (a laptop, a CI runner), where it uses
lab.kernels.host and no guest. These machines lack ESP/AH, so that path would go untested.
Here a UML guest boots on the host's root (hostfs), its init gives it what such a host has
(proc, sys, private /tmp and /run, loadable esp4/ah4 and crypto modules, and for Docker the
cgroup hierarchies and overlayfs a Docker host has), then runs an ordinary `lab` command in it
with `--kernel host`. Inside, the lab probes the kernel, finds ESP and AH, and runs namespaces,
charon, probes, captures (and, with `--provider docker`, its own dockerd) directly on that
kernel, exactly as on a real host. Reports are written to the host's file system (hostfs).

The inner lab keeps its run directories on the guest's tmpfs (LAB_STATE_DIR): its `cleanup`
sees guest PIDs only and must never judge the host's runs by them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from lab.errors import LabError, ProviderError
from lab.kernels.base import new_run_dir
from lab.kernels.uml import POWER_OFF, UmlGuest

ROOT = Path(__file__).resolve().parent.parent
GUEST_STATE = "/tmp/lab-state"  # the inner lab's run directories, on the guest's tmpfs

# What a Docker host has and a bare UML init has not: cgroup v1 hierarchies, overlayfs, a
# writable /etc/docker (on tmpfs: dockerd writes key.json there, which would land on the host).
DOCKER_HOST = """mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
for c in cpu cpuacct devices freezer pids blkio memory; do
  mkdir -p /sys/fs/cgroup/$c
  mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c 2>/dev/null || rmdir /sys/fs/cgroup/$c
done
mount -t tmpfs tmpfs /etc/docker
modprobe -d /run/lab-modules -a overlay br_netfilter 2>/dev/null
"""

BODY = """# An ESP-capable host: the inner lab runs on this kernel (--kernel host).
mkdir -p {state}
export LAB_STATE_DIR={state} HOME=/tmp COLUMNS=120
{docker}cd {root}
{commands}
echo 0 > {rcfile}
"""


def body(commands: list[tuple[list[str], str]], rcfile: str, docker: bool = False) -> str:
    """The guest's script: each `lab` argv, its output into OUT and its exit status into OUT.rc."""
    lines = []
    for argv, out in commands:
        cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "lab", *argv])
        lines.append(f"{cmd} > {shlex.quote(out)} 2>&1; echo $? > {shlex.quote(out + '.rc')}")
    return BODY.format(state=GUEST_STATE, docker=DOCKER_HOST if docker else "", root=shlex.quote(str(ROOT)),
                       commands="\n".join(lines), rcfile=rcfile)


def run(commands: list[tuple[list[str], str]], docker: bool = False, on_progress=None) -> list[int | None]:
    """Boot a guest, run the `lab` commands in it one after the other; each one's exit status
    (None: the guest stopped before it finished)."""

    run_id, files = new_run_dir()
    try:
        guest = UmlGuest(run_id, files)
        guest.body = body(commands, f"{files.rundir}/guest.rc", docker) + POWER_OFF
        guest.extra_paths += [os.path.dirname(out) for _argv, out in commands]  # seen even under /tmp
        try:
            guest.run(on_progress or (lambda e: None))
        except ProviderError as exc:
            raise ProviderError(f"the host-kernel guest stopped early: {exc}") from None
    finally:
        shutil.rmtree(files.rundir, ignore_errors=True)
    return [_status(out) for _argv, out in commands]


def _status(out: str) -> int | None:
    try:
        return int(Path(out + ".rc").read_text().strip())
    except (OSError, ValueError):
        return None


def main(argv: list[str]) -> int:
    """`python -m lab.hostsim [--docker] OUT -- LAB-ARGS...`: one lab command in the guest."""
    docker = "--docker" in argv
    argv = [a for a in argv if a != "--docker"]
    out, lab_args = argv[0], argv[argv.index("--") + 1:]
    try:
        (rc,) = run([(lab_args, os.path.abspath(out))], docker=docker)
    except LabError as exc:  # the guest itself failed: one line, as the lab reports its errors
        print(f"lab.hostsim: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if Path(out).exists():
        sys.stdout.write(Path(out).read_text(errors="replace"))
    return 3 if rc is None else rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
