"""`lab setup --system`: install the Debian packages the lab needs, for a user who installed the
package with pip and does not use the Makefile. The list is lab/programs.txt, the one the
Makefile reads; daemons are kept from starting on the machine (policy-rc.d) as `make setup`
does, because the servers run only inside lab namespaces."""

from __future__ import annotations

import os
import subprocess

from lab.errors import LabError

POLICY_RC = "/usr/sbin/policy-rc.d"


def packages() -> list[str]:
    from lab.programs import packages as table_packages

    return table_packages()


def missing(names: list[str]) -> list[str]:
    out = []
    for name in names:
        r = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", name], capture_output=True, text=True)
        if r.stdout.strip() != "installed":
            out.append(name)
    return out


def install(dry_run: bool, say) -> int:
    todo = missing(packages())
    if not todo:
        say("Debian packages present")
        return 0
    say("installing Debian packages: " + " ".join(todo))
    if dry_run:
        return 0
    if os.geteuid() != 0:
        raise LabError("lab setup --system installs Debian packages: run it as root (or with sudo)")
    guard = not os.path.exists(POLICY_RC)
    if guard:  # nothing we install may start a daemon on this machine
        with open(POLICY_RC, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(POLICY_RC, 0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", *todo]):
            if subprocess.run(cmd, env=env).returncode:
                raise LabError(f"{' '.join(cmd[:2])} failed")
    finally:
        if guard:
            os.unlink(POLICY_RC)
    return 0
