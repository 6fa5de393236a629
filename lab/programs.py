"""Which programs a run needs, and which Debian package brings each: read from programs.txt.

The same file is the Makefile's package list, so what `make setup` installs and what the lab
checks cannot drift apart. A run checks only what its topology needs (a design without real
servers does not need nginx); `lab doctor` checks everything the lab may ever start.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

TABLE = Path(__file__).with_name("programs.txt")
SEARCH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NEEDS = ("run", "uml", "failover", "nginx", "dovecot", "krb5kdc", "slapd", "curl", "kinit", "ldapsearch",
         "docker", "report", "diff", "setup")


@dataclass(frozen=True)
class Program:
    name: str  # a command found on PATH, or an absolute path that must exist
    package: str  # the Debian package that installs it
    needed_by: str  # one of NEEDS

    def present(self) -> bool:
        if self.name.startswith("/"):
            return os.path.exists(self.name)
        return shutil.which(self.name, path=os.environ.get("PATH", "") + ":" + SEARCH) is not None


def table(path: Path = TABLE) -> list[Program]:
    rows = []
    for line in path.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            name, package, needed_by = fields
            if needed_by not in NEEDS:
                raise ValueError(f"{path}: {name}: unknown 'needed by' {needed_by!r}")
            rows.append(Program(name, package, needed_by))
    return rows


def packages(path: Path = TABLE) -> list[str]:
    """Every Debian package of the table, in order, once (what `make setup` installs)."""
    return list(dict.fromkeys(p.package for p in table(path)))


def missing(needs: set[str]) -> list[Program]:
    return [p for p in table() if p.needed_by in needs and not p.present()]


def describe(absent: list[Program]) -> str:
    """One line naming every missing program and its package: the same for doctor and a run."""
    names = "; ".join(f"{p.name} is not installed (Debian package {p.package})" for p in absent)
    packages_ = " ".join(dict.fromkeys(p.package for p in absent))
    return f"{names}: run `make setup` (or apt-get install {packages_})"


def needs_of(topology, provider: str = "netns", failover: bool = False, uml: bool = True) -> set[str]:
    """What one run of this topology starts: the daemons of its real servers, its real clients,
    the failover tools, the Docker provider's engine and the guest kernel."""
    from lab.model.servers import real_services

    needs = {"run"}
    if uml:
        needs.add("uml")
    if failover:
        needs.add("failover")
    if provider == "docker":
        needs.add("docker")
    for host in topology.hosts:
        needs |= set(real_services(host).values())
    for e in topology.expectations:
        if getattr(e, "client", None) == "real":
            needs.add(CLIENT_OF.get(e.service.name, "curl"))
    return needs


# The real client each service uses (lab.services.prepare._client_plan); imap and pop3 are
# Python's own imaplib and poplib.
CLIENT_OF = {"http": "curl", "https": "curl", "kerberos": "kinit", "kerberos-tcp": "kinit",
             "ldap": "ldapsearch", "gc": "ldapsearch", "imap": "run", "pop3": "run"}


if __name__ == "__main__":  # `python3 lab/programs.py`: the package list, for humans and scripts
    print(" ".join(packages()))
