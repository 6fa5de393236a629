"""Where the plan's hosts live, and the one way to run a command on one of them.

A backend brings the hosts up (namespaces, links, addresses; containers first for Docker), hands
out each IPsec host's charon, runs commands on a host, checks and removes what it made. The
executor (lab.guest.executor) calls only this interface, so it has no branch per backend.
`plan.provider` names the backend (`--provider`); a new one is a subclass added to BACKENDS.
"""

from __future__ import annotations

from lab.guest import charon, netns


class Backend:
    """netns: every host is a network namespace of the lab kernel."""

    name = "netns"
    needs: frozenset[str] = frozenset()  # what lab.programs must find before a run (lab.preflight)

    def __init__(self, plan, workdir: str):
        self.plan, self.workdir = plan, workdir

    @staticmethod
    def boot_lines(workdir: str, seeded: bool) -> str:
        """Shell lines the lab kernel's init runs before the executor (lab.kernels.base.BootLines)."""
        return ""

    def create(self, progress, on_namespaces=None) -> bool:
        """Bring the hosts up; True when `on_namespaces` was called once the namespaces existed
        (the executor then starts the charons early), False when the caller must do it later."""
        netns.create(self.plan, on_namespaces=on_namespaces)
        return on_namespaces is not None

    def command(self, host: str, argv: list[str]) -> list[str]:
        """The primitive: the argv that runs `argv` on `host` when started from inside the host's
        network namespace (lab.guest.netns.inside), as the real servers are."""
        return list(argv)

    def charon(self, host, log_dir: str | None = None) -> charon.Charon:
        """The host's charon; `log_dir`: where it writes its log (the report's logs/)."""
        return charon.Charon(host["name"], host["ns"], self.workdir, log_dir=log_dir)

    def checks(self, xfrm: dict | None = None) -> dict | None:
        """What the backend checks on each host after the probes (None: nothing to check);
        `xfrm`: the XFRM listings the executor read from each host's network namespace."""
        return None

    def destroy(self, logs: str) -> dict | None:
        """Remove what `create` made beyond the namespaces (netns.destroy removes those);
        returns what the results should say about it."""
        return None


class DockerBackend(Backend):
    """docker: every host is a container of the lab's image, run by a private dockerd in the lab
    kernel (lab.guest.containers); its network namespace is then wired as for netns."""

    name = "docker"
    needs = frozenset({"docker"})

    def __init__(self, plan, workdir: str):
        super().__init__(plan, workdir)
        from lab.guest import containers  # only runs that use it pay for it (the guest is slow)

        self.hosts = containers.DockerHosts(plan, workdir)

    @staticmethod
    def boot_lines(workdir: str, seeded: bool) -> str:
        from lab.guest import containers

        return containers.init_snippet(workdir, seeded=seeded)

    def create(self, progress, on_namespaces=None) -> bool:
        self.hosts.create(progress)
        return False  # container charons start after the wiring, as they always have

    def command(self, host: str, argv: list[str]) -> list[str]:
        return self.hosts.enter(host) + list(argv)

    def charon(self, host, log_dir: str | None = None) -> charon.Charon:
        return self.hosts.charon(host)  # its log is copied out of the container at teardown

    def checks(self, xfrm: dict | None = None) -> dict | None:
        return self.hosts.checks(xfrm)

    def destroy(self, logs: str) -> dict | None:
        self.hosts.destroy(logs)
        return self.hosts.info


BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (Backend, DockerBackend)}


def backend_class(name: str) -> type[Backend]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}") from None
