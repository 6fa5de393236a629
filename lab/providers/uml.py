"""Run the executor inside a User-Mode Linux guest: a kernel with ESP, AH and XFRM, as a process.

The guest boots on the host's own root file system (hostfs), so it runs the same Python, the
same lab package and the same strongSwan; only the kernel differs. Its PID 1 is a small shell
script that mounts private tmpfs on /tmp and /run, teaches the kernel to load UML modules,
runs the executor and halts. The guest is a child of this process in its own process group,
dies with it (PR_SET_PDEATHSIG) and is killed as a group when the run ends in any way.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab.errors import MissingTool, ProviderError
from lab.providers.base import ProgressFn, RunFiles, dispatch_line

# Where `make setup` puts a newer UML when Debian 12's cannot run on this CPU (see tools/).
PRIVATE_UML = Path(os.environ.get("LAB_UML_DIR", "/var/lib/ipsec-lab/uml"))
STOCK_UML = Path("/usr/bin/linux.uml")
STOCK_MODULES = Path("/usr/lib/uml/modules")
MEMORY = os.environ.get("LAB_UML_MEM", "1024M")
GUEST_WORKDIR = "/tmp/lab"  # on the guest's private tmpfs
MODULES = "esp4 ah4 xfrm_user xfrm_algo veth bridge af_packet sch_ingress cls_u32 act_pedit nf_tables cls_flower cls_matchall act_gact act_nat"

PRELUDE = """#!/bin/sh
# PID 1 of a lab guest, written by lab.providers.uml for run {run_id}.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONUNBUFFERED=1 LAB_RUN_ID={run_id}
mount -t proc proc /proc
mount -t sysfs sys /sys
# Private tmpfs: what the guest writes under /tmp and /run must not land on the host.
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /run/netns /run/lab-modules/lib/modules
ln -s {modules}/$(uname -r) /run/lab-modules/lib/modules/$(uname -r)
# The kernel asks for crypto templates (hmac, gcm, ...) when an SA is added: point it at them.
printf '#!/bin/sh\\nexec /sbin/modprobe -d /run/lab-modules "$@"\\n' > /run/lab-modprobe
chmod 755 /run/lab-modprobe
echo /run/lab-modprobe > /proc/sys/kernel/modprobe
modprobe -a -d /run/lab-modules {module_list} 2>/dev/null
ip link set lo up
echo "@@guest booted $(uname -r)"
"""

INIT = PRELUDE + """{docker}{python} -m lab.guest.executor {plan} {secrets} {workdir}
echo $? > {rcfile}
sync
halt -f
"""


@dataclass(frozen=True)
class UmlKernel:
    binary: Path
    modules: Path

    @property
    def label(self) -> str:
        return str(self.binary)


def find_kernel() -> UmlKernel:
    private = PRIVATE_UML / "linux"
    if private.exists():
        return UmlKernel(private, PRIVATE_UML / "modules")
    if STOCK_UML.exists():
        return UmlKernel(STOCK_UML, STOCK_MODULES)
    raise MissingTool("no User-Mode Linux kernel: run `make setup` (installs user-mode-linux)")


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the lab process dies, even by SIGKILL."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class UmlGuest:
    name = "uml"

    def __init__(self, run_id: str, files: RunFiles, kernel: UmlKernel | None = None):
        self.run_id = run_id
        self.files = files
        self.kernel = kernel or find_kernel()
        self.boot_seconds: float | None = None
        self.extra_args: list[str] = []  # e.g. ubd0=COW,BACKING: a seeded docker data-root
        self.body: str | None = None  # instead of the executor (image seeding); must write guest.rc

    def _docker_init(self) -> str:
        """Only for `provider: docker`: the lines that start the run's private dockerd, on a
        copy-on-write view of the seeded data-root when the image has one."""
        with open(self.files.plan) as f:
            plan = json.load(f)
        if plan.get("provider", "netns") != "docker":
            return ""
        from lab.guest.containers import init_snippet
        seed = (plan.get("image") or {}).get("seed")
        if seed:
            self.extra_args.append(f"ubd0={self.files.rundir}/docker.cow,{seed}")
        return init_snippet(GUEST_WORKDIR, seeded=bool(seed))

    def _write_init(self) -> str:
        path = os.path.join(self.files.rundir, "init.sh")
        if self.body is not None:
            text = PRELUDE.format(run_id=self.run_id, modules=self.kernel.modules, module_list=MODULES) + self.body
        else:
            text = INIT.format(docker=self._docker_init(),
            run_id=self.run_id, modules=self.kernel.modules, module_list=MODULES,
            python=sys.executable, plan=self.files.plan, secrets=self.files.secrets,
            rcfile=os.path.join(self.files.rundir, "guest.rc"), workdir=GUEST_WORKDIR,
            )
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)
        return path

    def argv(self, init: str) -> list[str]:
        return [
            str(self.kernel.binary), f"mem={MEMORY}", "rootfstype=hostfs", "rootflags=/", "rw",
            f"init={init}", "con=null", "con0=null,fd:1", "quiet",
            # Keep UML's control socket in the run directory, named after the run, so that
            # nothing is left in ~/.uml and `lab cleanup` can find a killed run's guest.
            f"umid=lab-{self.run_id}", f"uml_dir={self.files.rundir}", *self.extra_args,
        ]

    def run(self, on_progress: ProgressFn) -> int:
        init = self._write_init()
        started = time.monotonic()
        env = dict(os.environ, LAB_RUN_ID=self.run_id, TMPDIR=self.files.rundir)
        with open(self.files.console, "w") as console:
            proc = subprocess.Popen(
                self.argv(init), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, preexec_fn=_die_with_parent, text=True, errors="replace",
            )
            try:
                for line in proc.stdout:
                    if line.startswith("@@guest booted"):
                        self.boot_seconds = time.monotonic() - started
                        on_progress({"phase": "guest", "message": line[2:].strip(),
                                     "boot_seconds": round(self.boot_seconds, 2)})
                        continue
                    dispatch_line(line, on_progress, console)
                proc.wait(timeout=30)
            finally:
                self._kill(proc)
        rc_file = Path(self.files.rundir, "guest.rc")
        if not rc_file.exists():
            tail = Path(self.files.console).read_text(errors="replace").strip().splitlines()[-5:]
            raise ProviderError("the UML guest stopped before the lab finished: " + " | ".join(tail))
        return int(rc_file.read_text().strip() or 1)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        """UML runs as a group of host processes: end the whole group, then reap."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
