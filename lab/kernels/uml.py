"""Run the executor inside a User-Mode Linux guest: a kernel with ESP, AH and XFRM, as a process.

The guest boots on the host's own root file system (hostfs), so it runs the same Python, the
same lab package and the same strongSwan; only the kernel differs. Its PID 1 is a small shell
script that mounts private tmpfs on /tmp and /run, binds back the host paths under them that the
run needs (a checkout or a Python under /tmp or /run), teaches the kernel to load UML modules,
runs the executor and powers off. The guest is a child of this process in its own process
group, killed as a group when the run ends in any way, and by a watchdog when this process is
killed outright (UML does not keep PR_SET_PDEATHSIG: measured, kill -9 left it running 7-14 s).
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab.compile import kernel_crypto, reply_guard
from lab.contract import Plan
from lab.errors import MissingTool, ProviderError
from lab.kernels.base import BootLines, Deadline, ProgressFn, RunFiles, dispatch_line, run_timeout

# Where `make setup` puts a newer UML when Debian 12's cannot run on this CPU (see tools/).
PRIVATE_UML = Path(os.environ.get("LAB_UML_DIR", "/var/lib/ipsec-lab/uml"))
STOCK_UML = Path("/usr/bin/linux.uml")
STOCK_MODULES = Path("/usr/lib/uml/modules")
MEMORY = os.environ.get("LAB_UML_MEM", "1024M")
GUEST_WORKDIR = "/tmp/.lab-guest"  # on the guest's private tmpfs (a checkout may be /tmp/lab)
MASKED = ("/tmp", "/run")  # where the guest mounts tmpfs of its own
MODULES = "esp4 ah4 xfrm_user xfrm_algo veth bridge af_packet sch_ingress cls_u32 act_pedit nf_tables cls_flower cls_matchall act_gact act_nat"
# Loaded at boot only where the plan uses them (each set costs 0.1-0.15 s of the guest's boot);
# if one is needed after all, the kernel asks the modprobe wrapper for it: slower, never wrong.
CORE_MODULES = "esp4 ah4 xfrm_user xfrm_algo veth bridge af_packet"
TC_MODULES = "sch_ingress cls_u32 cls_flower cls_matchall act_gact act_nat"  # firewall filters, NAT


def modules_for(plan: Plan | None) -> str:
    """The modules a plan's run needs, for the guest's one boot-time modprobe."""
    if plan is None:
        return MODULES
    mods = [CORE_MODULES]
    tamper = any(p.get("tamper") for p in plan.probes)
    if tamper or any(h.get("firewall") for h in plan.hosts):
        mods.append(TC_MODULES)
    if tamper:
        mods.append("act_pedit")  # tc's pedit rewrites a byte of the tampered flow
    if plan.failover:
        mods.append("nf_tables")  # the failover's bridge filters (nft)
    if any(h.get("reply_guard") for h in plan.hosts):
        mods.append(reply_guard.MODULES)  # an IKEv1 Respond Only host's reply guard (iptables)
    return " ".join(mods)

# Each step's guest uptime goes into LAB_BOOT (`mark` is a shell function: no process), and
# the executor records them (`boot_steps` in executor.json): where the guest's boot went.
PRELUDE = """#!/bin/sh
# PID 1 of a lab guest, written by lab.kernels.uml for run {run_id}.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONUNBUFFERED=1 LAB_RUN_ID={run_id} LAB_MODPROBE_LOG=/run/lab-modprobe.log
mark() {{ read t _ < /proc/uptime; LAB_BOOT="$LAB_BOOT $1=$t"; }}
mount -t proc proc /proc
mark kernel
# No uevent helper (the kernel's default, /sbin/hotplug, does not exist here): else every
# device the run adds (each veth, bridge, namespace's lo) first tries to start it, in vain:
# 0.3-0.6 s per 20 veth pairs in the guest against 0.05-0.2 s without.
echo > /proc/sys/kernel/hotplug
mount -t sysfs sys /sys
# Private tmpfs: what the guest writes under /tmp and /run must not land on the host.
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
{binds}# The modules' tree and the modprobe wrapper were made on the host, in the run directory
# (lab.kernels.uml.write_module_files): in the guest each process start costs 30-100 ms.
ln -s {module_tree} /run/lab-modules
echo {wrapper} > /proc/sys/kernel/modprobe
mark mounts
"""

# The kernel's modules and the crypto warm-up: in the guest's init, before whatever runs next.
KERNEL_READY = """modprobe -a -d /run/lab-modules {module_list} 2>/dev/null
mark modules
{crypto}mark crypto
"""
LOOPBACK = "ip link set lo up\n"  # without a warm-up; with one, its batch does it

# Issue 12: the first SA of an algorithm asks for ~18 modules by name, one modprobe process
# each (0.1-0.15 s in the guest), and concurrent first installs queue behind one another.
# The crypto modules are loaded with the others above; here every algorithm the plan can
# negotiate is instantiated once, in one process, while the kernel answers module requests
# itself (an empty modprobe path starts no process). The wrapper is back for the run.
CRYPTO_WARMUP = """echo > /proc/sys/kernel/modprobe
ip -force -batch {batch} >/dev/null
echo {wrapper} > /proc/sys/kernel/modprobe
"""

# The kernel asks for crypto templates (hmac, gcm, ...) when an SA is added: the wrapper
# points modprobe at the UML modules. Each request is logged (a shell builtin, no extra
# process): the run reports how many came. Nothing in the lab uses kernel TLS, KCM or ESP in
# TCP, the users of the stream parser whose start-up the kernel skips (KERNEL_ARGS): their
# modules are refused. So are binary formats (binfmt-*): no UML module provides one, and
# dockerd's start asks six times (it tries foreign-architecture programs), each a modprobe.
MODPROBE_WRAPPER = """#!/bin/sh
echo "$3" >> /run/lab-modprobe.log
case "$3" in tls|kcm|espintcp|tcp-ulp-*|net-pf-41|binfmt-*) exit 1;; esac
exec /sbin/modprobe -d /run/lab-modules "$@"
"""


def write_module_files(rundir: str, modules: Path) -> tuple[str, str]:
    """In the run directory: `modules/lib/modules/<release>` linked to each of the kernel's
    module trees (the guest's `uname -r` picks its own; modprobe -d wants this layout), and
    the modprobe wrapper. Returns both paths, as the guest sees them (hostfs: the same)."""
    tree = os.path.join(rundir, "modules")
    os.makedirs(os.path.join(tree, "lib", "modules"))
    for release in sorted(os.listdir(modules)) if modules.is_dir() else []:
        os.symlink(modules / release, os.path.join(tree, "lib", "modules", release))
    wrapper = os.path.join(rundir, "modprobe")
    with open(wrapper, "w") as f:
        f.write(MODPROBE_WRAPPER)
    os.chmod(wrapper, 0o755)
    return tree, wrapper

# Power off through sysrq (built into the kernel): `halt` comes with systemd-sysv, which a
# minimal Debian root does not have. sysrq is asynchronous: wait for it.
POWER_OFF = """sync
echo o > /proc/sysrq-trigger
exec sleep 30
"""

# With namespaces, Python's start and the executor's imports (about half a second in the
# guest) run while the modules load and the crypto warms up; the executor waits for
# LAB_KERNEL_READY before it touches the kernel, and says when the guest is booted.
INIT = PRELUDE + """( {kernel_ready}echo "$LAB_BOOT" > /run/lab-kernel-ready ) &
export LAB_BOOT LAB_KERNEL_READY=/run/lab-kernel-ready
{python_env}{python} {python_flags}-m lab.guest.executor {plan} {secrets} {workdir}
echo $? > {rcfile}
""" + POWER_OFF

# With containers (dockerd needs the modules first) and for other bodies: one after the other.
BOOTED = """echo "@@guest booted $(uname -r)"
"""
INIT_IN_TURN = PRELUDE + "{kernel_ready}" + BOOTED + """export LAB_BOOT
{backend}{python_env}{python} {python_flags}-m lab.guest.executor {plan} {secrets} {workdir}
echo $? > {rcfile}
""" + POWER_OFF

# Skipped at boot (0.6-1.3 s of a 1.5 s kernel start on these machines, `initcall_debug`):
# the RAID-6 benchmark (16 jiffies per algorithm at UML's 100 Hz), zswap's pool (the guest
# has no swap) and the stream parser's workqueue (kernel TLS, KCM, ESP in TCP: not used, and
# their modules are refused by the guest's modprobe wrapper). Nothing the lab runs uses them.
# And no self-test of each crypto algorithm at its first use (0.15-0.2 s of the warm-up): the
# same generic C code runs either way, and what it produces is judged on the wire.
# Devices nothing in the guest uses, each registered before init while the kernel tries its
# uevent helper for it (init turns the helper off, too late for these): the 256 legacy BSD
# pty pairs (0.75-1.0 s of a 1.5 s kernel start), the serial lines and the consoles other than
# con0 (0.15-0.4 s; `none` is not registered at all, `null` is), and the JFS, Btrfs and XFS
# caches (0.05-0.15 s; the guest mounts hostfs, tmpfs and, with Docker, ext4). Kernel to init:
# 0.13 s from 0.6-2.2 s (initcall_debug; medians of 8 boots, init reached at 0.29 s against 2.18 s).
KERNEL_ARGS = ("initcall_blacklist=raid6_select_algo,init_zswap,strp_dev_init,init_jfs_fs,init_btrfs_fs,init_xfs_fs",
               "cryptomgr.notests=1", "pty.legacy_count=0", "ssl=none", "con=none", "con0=null,fd:1")


def unconfigured_line(line: str) -> bool:
    """What those `none` lines make the kernel say at boot, once per line (31 of them): left out
    of the console log, which keeps everything else the kernel and init print."""
    return line.startswith("setup_one_line failed for device ") and line.rstrip().endswith("configured as 'none'")


def hidden_paths(paths) -> list[str]:
    """Of these host paths, those under a MASKED tmpfs, reduced to the topmost of each branch:
    what the guest must mount back (from hostfs) to still see them. /tmp and /run themselves are
    never bound back: the guest's own files must not land on the host."""
    under = set()
    for p in paths:
        for q in {os.path.abspath(p), os.path.realpath(p)}:
            if any(q.startswith(m + "/") for m in MASKED) and os.path.exists(q):
                under.add(q)
    return sorted(p for p in under if not any(p.startswith(o + "/") for o in under if o != p))


def bind_lines(paths: list[str]) -> str:
    """Shell lines mounting each host path back at the same place (hostfs takes any host path)."""
    if not paths:
        return ""
    lines = ["# Host paths under /tmp or /run this run needs (checkout, Python, run files): bound back."]
    for p in paths:
        q = shlex.quote(p)
        lines.append(f"mkdir -p {q} && mount -t hostfs -o {q} none {q}")
    return "\n".join(lines) + "\n"


def python_without_site() -> tuple[str, str]:
    """`PYTHONPATH=... ` and `-S `: the executor's Python skips `site` (0.3 s in the guest, most
    of it the editable install's import finder) and finds the lab and vici on the path this
    Python has. ("", "") where a path holds the path separator."""
    import lab

    paths = [os.path.dirname(os.path.dirname(os.path.abspath(lab.__file__)))]
    paths += [p for p in sys.path if p and os.path.isdir(p) and p not in paths]
    if any(os.pathsep in p for p in paths):
        return "", ""
    return f"PYTHONPATH={shlex.quote(os.pathsep.join(paths))} ", "-S "


def needed_host_paths(files: RunFiles, kernel: "UmlKernel") -> list[str]:
    """What the guest reads or writes on the host: this Python and its environment, the lab
    package (an editable checkout), the run directory, the kernel's modules."""
    import lab

    return [sys.executable, sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
            *[p for p in sys.path if p], os.path.dirname(os.path.dirname(os.path.abspath(lab.__file__))),
            files.rundir, str(kernel.modules), str(kernel.binary)]


@dataclass(frozen=True)
class UmlKernel:
    binary: Path
    modules: Path

    @property
    def label(self) -> str:
        return str(self.binary)


def has_private_kernel() -> bool:
    return (PRIVATE_UML / "linux").exists()


def find_kernel() -> UmlKernel:
    if has_private_kernel():
        return UmlKernel(PRIVATE_UML / "linux", PRIVATE_UML / "modules")
    if STOCK_UML.exists():
        return UmlKernel(STOCK_UML, STOCK_MODULES)
    from lab import programs
    raise MissingTool(programs.describe([p for p in programs.table() if p.needed_by == "uml"]))


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the lab process dies, even by SIGKILL."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _watchdog(pgid: int) -> subprocess.Popen:
    """A shell in a session of its own that reads a pipe only this process holds: when this
    process dies, however it dies (kill -9 included), the read ends and the shell kills the
    guest's whole process group. PR_SET_PDEATHSIG alone does not do it: UML loses it."""
    return subprocess.Popen(["sh", "-c", 'read _ ; kill -s KILL -- "-$0" 2>/dev/null', str(pgid)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


class UmlGuest:
    name = "uml"

    def __init__(self, run_id: str, files: RunFiles, kernel: UmlKernel | None = None, plan: Plan | None = None,
                 boot: BootLines | None = None):
        self.run_id = run_id
        self.files = files
        self.kernel = kernel or find_kernel()
        self.boot_seconds: float | None = None
        self.extra_args: list[str] = []  # e.g. ubd0=COW,BACKING: a seeded docker data-root
        self.body: str | None = None  # instead of the executor (image seeding); must write guest.rc
        self.extra_paths: list[str] = []  # more host paths the body needs (the image tarball)
        self.plan = plan  # what the executor will run (lab.contract.Plan); None with a `body`
        self.boot = boot  # the backend's init lines (the Docker backend's dockerd), given by the runner

    def _backend_init(self) -> str:
        """The backend's lines before the executor (the Docker backend starts the run's private
        dockerd), on a copy-on-write view of the plan image's seeded disk when it has one."""
        seed = (self.plan.image or {}).get("seed")  # only a plan with an image (Docker) has one
        if seed:
            self.extra_args.append(f"ubd0={self.files.rundir}/docker.cow,{seed}")
        return self.boot(GUEST_WORKDIR, bool(seed)) if self.boot else ""

    def _crypto_init(self, wrapper: str) -> str:
        """The warm-up lines for this plan's algorithms (lab.compile.kernel_crypto), whose `ip`
        also brings the loopback up; without a warm-up, `ip` for the loopback alone."""
        lines = kernel_crypto.warmup_batch(self.plan) if self.plan is not None else []
        if not lines:
            return LOOPBACK
        batch = os.path.join(self.files.rundir, "crypto-warmup.batch")
        with open(batch, "w") as f:
            f.write("\n".join(["link set lo up", *lines]) + "\n")
        return CRYPTO_WARMUP.format(batch=shlex.quote(batch), wrapper=shlex.quote(wrapper))

    def _write_init(self) -> str:
        path = os.path.join(self.files.rundir, "init.sh")
        binds = bind_lines(hidden_paths(needed_host_paths(self.files, self.kernel) + self.extra_paths))
        q = shlex.quote
        tree, wrapper = write_module_files(self.files.rundir, self.kernel.modules)
        # Image seeding and other bodies: every module. Containers need only the plan's (their
        # dockerd has no bridge and no iptables; its overlay module is loaded by its own lines).
        plan = None if self.body is not None else self.plan
        module_list = f"{modules_for(plan)} {kernel_crypto.MODULES}"
        kernel_ready = KERNEL_READY.format(module_list=module_list,
                                           crypto=LOOPBACK if self.body is not None else self._crypto_init(wrapper))
        fill = dict(run_id=self.run_id, module_tree=q(tree), wrapper=q(wrapper), binds=binds,
                    kernel_ready=kernel_ready)
        if self.body is not None:
            text = PRELUDE.format(**fill) + kernel_ready + BOOTED + self.body
        else:
            backend = self._backend_init()  # a backend's daemon (dockerd) needs the modules first
            python_env, python_flags = python_without_site()
            text = (INIT_IN_TURN if backend else INIT).format(
                **fill, backend=backend, python=q(sys.executable), python_env=python_env, python_flags=python_flags,
                plan=q(self.files.plan), secrets=q(self.files.secrets),
                rcfile=q(os.path.join(self.files.rundir, "guest.rc")), workdir=GUEST_WORKDIR)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)
        return path

    def argv(self, init: str) -> list[str]:
        return [
            str(self.kernel.binary), f"mem={MEMORY}", "rootfstype=hostfs", "rootflags=/", "rw",
            f"init={init}", "quiet",
            # Keep UML's control socket in the run directory, named after the run, so that
            # nothing is left in ~/.uml and `lab cleanup` can find a killed run's guest.
            f"umid=lab-{self.run_id}", f"uml_dir={self.files.rundir}", *KERNEL_ARGS, *self.extra_args,
        ]

    def run(self, on_progress: ProgressFn) -> int:
        init = self._write_init()
        timeout = run_timeout()  # a bad LAB_RUN_TIMEOUT stops the run before the guest starts
        started = time.monotonic()
        env = dict(os.environ, LAB_RUN_ID=self.run_id, TMPDIR=self.files.rundir)
        with open(self.files.console, "w") as console:
            proc = subprocess.Popen(
                self.argv(init), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, preexec_fn=_die_with_parent, text=True, errors="replace",
            )
            watchdog = _watchdog(proc.pid)
            deadline = Deadline(timeout, lambda: _kill_group(proc.pid))
            try:
                with deadline:
                    for line in proc.stdout:
                        if line.startswith("@@guest booted"):
                            self.boot_seconds = time.monotonic() - started
                            on_progress({"phase": "guest", "message": line[2:].strip(),
                                         "boot_seconds": round(self.boot_seconds, 2)})
                            continue
                        if unconfigured_line(line):
                            continue
                        dispatch_line(line, on_progress, console)
                    proc.wait(timeout=30)
            finally:
                self._kill(proc)
                watchdog.kill()  # the guest is gone: the watchdog has nothing left to do
                watchdog.wait()
                watchdog.stdin.close()
        if deadline.expired:
            raise deadline.error("the console log")
        rc_file = Path(self.files.rundir, "guest.rc")
        if not rc_file.exists():
            tail = Path(self.files.console).read_text(errors="replace").strip().splitlines()[-5:]
            raise ProviderError("the UML guest stopped before the lab finished: " + " | ".join(tail))
        return int(rc_file.read_text().strip() or 1)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        """UML runs as a group of host processes: end the whole group, then reap."""
        _kill_group(proc.pid)
        proc.wait()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
