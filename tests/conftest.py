"""Fixtures shared by the tests of the guest runtime (see tests/fakes.py)."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager

import pytest

from fakes import Call, Recorder


def replace_everywhere(monkeypatch, name: str, fake) -> None:
    """Replace lab.guest.netns.NAME in netns and in each guest module that imported it by name."""
    import importlib
    import pkgutil

    import lab.guest
    from lab.guest import netns

    real = getattr(netns, name)
    for info in pkgutil.iter_modules(lab.guest.__path__):
        module = importlib.import_module(f"lab.guest.{info.name}")
        if getattr(module, name, None) is real:
            monkeypatch.setattr(module, name, fake)


@pytest.fixture
def one_namespace(monkeypatch):
    """Every lab namespace is the test's own: sockets and processes land on this host's loopback."""

    @contextmanager
    def here(ns):
        yield

    replace_everywhere(monkeypatch, "inside", here)  # each module that enters a namespace
    # Never this host's own links and addresses: a host's netlink requests are recorded instead.
    from lab.guest import rtnl

    monkeypatch.setattr(rtnl, "configure", lambda ns, host, inside: None)
    monkeypatch.setattr(rtnl, "apply", lambda ns, requests, inside, doing: None)
    from lab.guest import failover  # nor a gratuitous ARP on this host's own interfaces

    monkeypatch.setattr(failover, "_announce", lambda node, vip, count=2, gap=0.2: None)


@pytest.fixture
def kernel(monkeypatch, tmp_path, one_namespace):
    """This host in place of the lab kernel: commands recorded instead of run, every namespace
    is the test's own (sockets land on loopback), each charon a scripted VICI server (also when
    started through netns.spawn_private_run, which needs root and a real namespace)."""
    from lab.guest import netns

    rec = Recorder(str(tmp_path))
    monkeypatch.setattr(subprocess, "run", rec.run)
    monkeypatch.setattr(subprocess, "Popen", rec.popen)
    replace_everywhere(monkeypatch, "spawn_private_run", rec.spawn)
    monkeypatch.setattr(netns, "write_sysctl", lambda ns, key, value: rec.calls.append(
        Call(["sysctl", "-n", ns, f"{key}={value}"])))
    # The SAs a namespace's kernel lists over netlink (lab.guest.xfrm.states), by namespace.
    from lab.guest import xfrm

    rec.xfrm_states = {}
    from lab.guest import rtnl

    def configure(ns, host, inside):  # what `ip -n NS -batch -` would have been given, as one call
        text = "\n".join(what for what, _ in rtnl.host_requests(host, lambda ifname: 1)) + "\n"
        rec.calls.append(Call(["ip", "-n", ns, "-batch", "-"], input=text, ns=ns))

    monkeypatch.setattr(rtnl, "configure", configure)

    def apply(ns, requests, inside, doing):  # each request as the `ip` command it stands for
        for what, _ in requests(lambda ifname: 1):
            rec.calls.append(Call(["ip", "-n", ns, *what.split()], ns=ns))

    monkeypatch.setattr(rtnl, "apply", apply)
    from lab.guest import failover

    monkeypatch.setattr(failover, "_announce", lambda node, vip, count=2, gap=0.2: rec.calls.append(
        Call(["gratuitous-arp", node["ns"], node["ifname"], vip], ns=node["ns"])))

    def states(ns):
        rec.calls.append(Call(["netlink", "xfrm-getsa-dump", ns], ns=ns))
        return rec.xfrm_states.get(ns, "")

    monkeypatch.setattr(xfrm, "states", states)
    yield rec
    rec.close()
