"""Before anything starts: are the tools there, and which kernel carries the lab?"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from lab import programs
from lab.errors import LabError, MissingTool
from lab.guest.backends import BACKENDS
from lab.kernels.host import HostKernel
from lab.kernels.kernel import probe_host_kernel
from lab.kernels.uml import UmlGuest, UmlKernel, find_kernel, has_private_kernel

KERNELS = ("auto", "host", "uml")
PROVIDERS = tuple(BACKENDS)  # --provider: the guest's backends (lab.guest.backends)


def check_programs(needs: set[str]) -> None:
    """Stop before anything starts if a program these needs call for is missing (one line)."""
    absent = programs.missing(needs)
    if absent:
        raise MissingTool(programs.describe(absent))


def check_provider(provider: str) -> None:
    """The Docker provider starts a private dockerd (as root, so NET_ADMIN is there) on the lab kernel."""
    if provider not in PROVIDERS:
        raise LabError(f"--provider: must be one of {', '.join(PROVIDERS)} (got {provider!r})")
    if BACKENDS[provider].needs:
        check_programs(set(BACKENDS[provider].needs))


def check_tools() -> None:
    check_programs({"run"})
    if os.geteuid() != 0:
        raise MissingTool("the lab needs root (namespaces, XFRM, raw captures): run it with sudo")


def check_everything() -> int:
    """`lab doctor`: every program the lab may start, whatever the topology; returns how many."""
    needs = set(programs.NEEDS) - {"setup"}
    if has_private_kernel():  # make setup's newer UML stands in for Debian's
        needs.discard("uml")
    check_programs(needs)
    return sum(1 for p in programs.table() if p.needed_by in needs)


@dataclass(frozen=True)
class KernelChoice:
    kind: str  # "host" or "uml"
    why: str
    uml: UmlKernel | None = None
    reason: str = ""  # the long form, for `lab doctor`

    def describe(self) -> str:
        if self.kind == "host":
            return f"host kernel {platform.release()} ({self.why})"
        return f"UML guest {self.uml.label} ({self.why})"

    def kernel(self, run_id: str, files, plan=None, boot=None):
        """The kernel object that runs this plan's executor; `boot`: the backend's init lines
        (lab.kernels.base.BootLines), which a host kernel does not need (the executor starts
        what it needs itself)."""
        if self.kind == "host":
            return HostKernel(run_id, files, plan)
        return UmlGuest(run_id, files, self.uml, plan, boot)


def choose_kernel(requested: str = "auto") -> KernelChoice:
    if requested not in KERNELS:
        raise LabError(f"--kernel: must be one of {', '.join(KERNELS)} (got {requested!r})")
    check_tools()
    if requested == "uml":
        return KernelChoice("uml", "requested", find_kernel(), reason="--kernel uml was asked for")
    support = probe_host_kernel()
    if support.ipsec:
        return KernelChoice("host", "it has ESP and AH", reason=HOST_REASON)
    if requested == "host":
        raise MissingTool(f"--kernel host: this kernel cannot hold ESP/AH SAs ({support.detail or 'no esp4/ah4'}); "
                          "use --kernel uml or auto")
    refused = [p for p, ok in (("ESP", support.esp), ("AH", support.ah)) if not ok]
    reason = (f"this kernel refused a test {' and '.join(refused)} SA in a throwaway namespace"
              f"{': ' + support.detail.rstrip('.') if support.detail else ''}; the data plane runs in a User-Mode Linux "
              "guest (a kernel with esp4/ah4, booted as a process on this file system)")
    return KernelChoice("uml", "host kernel has no ESP/AH", find_kernel(), reason=reason)


HOST_REASON = ("this kernel accepted a test ESP and AH SA in a throwaway network namespace, so namespaces, charon, "
               "probes and captures (and with --provider docker, a private dockerd) run directly on "
               "this kernel, with no guest to boot")
