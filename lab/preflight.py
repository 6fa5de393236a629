"""Before anything starts: are the tools there, and which kernel carries the lab?"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass

from lab.errors import LabError, MissingTool
from lab.providers.host import HostKernel
from lab.providers.kernel import probe_host_kernel
from lab.providers.uml import UmlGuest, UmlKernel, find_kernel

CHARON = "/usr/lib/ipsec/charon"
TOOLS = {  # program -> Debian package
    "ip": "iproute2",
    "tcpdump": "tcpdump",
    "unshare": "util-linux",
    "modprobe": "kmod",
}
KERNELS = ("auto", "host", "uml")
PROVIDERS = ("netns", "docker")
DOCKER_TOOLS = {"dockerd": "docker.io", "containerd": "containerd", "runc": "runc", "docker-init": "tini"}


def check_provider(provider: str) -> None:
    """The Docker provider starts a private dockerd (as root, so NET_ADMIN is there) on the lab kernel."""
    if provider not in PROVIDERS:
        raise LabError(f"--provider: must be one of {', '.join(PROVIDERS)} (got {provider!r})")
    if provider == "docker":
        for tool, package in DOCKER_TOOLS.items():
            if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
                raise MissingTool(f"--provider docker: {tool} is not installed: run `make setup` "
                                  f"(Debian package {package})")


def check_tools() -> None:
    for tool, package in TOOLS.items():
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            raise MissingTool(f"{tool} is not installed: run `make setup` (Debian package {package})")
    if not os.access(CHARON, os.X_OK):
        raise MissingTool(f"{CHARON} is missing: run `make setup` (Debian package strongswan-charon)")
    if os.geteuid() != 0:
        raise MissingTool("the lab needs root (namespaces, XFRM, raw captures): run it with sudo")


@dataclass(frozen=True)
class KernelChoice:
    kind: str  # "host" or "uml"
    why: str
    uml: UmlKernel | None = None

    def describe(self) -> str:
        if self.kind == "host":
            return f"host kernel {platform.release()} ({self.why})"
        return f"UML guest {self.uml.label} ({self.why})"

    def provider(self, run_id: str, files):
        if self.kind == "host":
            return HostKernel(run_id, files)
        return UmlGuest(run_id, files, self.uml)


def choose_kernel(requested: str = "auto") -> KernelChoice:
    if requested not in KERNELS:
        raise LabError(f"--kernel: must be one of {', '.join(KERNELS)} (got {requested!r})")
    check_tools()
    if requested == "uml":
        return KernelChoice("uml", "requested", find_kernel())
    support = probe_host_kernel()
    if support.ipsec:
        return KernelChoice("host", "it has ESP and AH")
    if requested == "host":
        raise MissingTool(f"--kernel host: this kernel cannot hold ESP/AH SAs ({support.detail or 'no esp4/ah4'}); "
                          "use --kernel uml or auto")
    return KernelChoice("uml", "host kernel has no ESP/AH", find_kernel())
