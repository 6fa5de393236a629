"""Fixtures shared by the tests of the guest runtime (see tests/fakes.py)."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager

import pytest

from fakes import Call, Recorder


@pytest.fixture
def one_namespace(monkeypatch):
    """Every lab namespace is the test's own: sockets and processes land on this host's loopback."""
    import importlib
    import pkgutil

    import lab.guest
    from lab.guest import netns

    @contextmanager
    def here(ns):
        yield

    real = netns.inside
    for info in pkgutil.iter_modules(lab.guest.__path__):  # each module that enters a namespace
        module = importlib.import_module(f"lab.guest.{info.name}")
        if getattr(module, "inside", None) is real:
            monkeypatch.setattr(module, "inside", here)


@pytest.fixture
def kernel(monkeypatch, tmp_path, one_namespace):
    """This host in place of the lab kernel: commands recorded instead of run, every namespace
    is the test's own (sockets land on loopback), each charon a scripted VICI server."""
    from lab.guest import netns

    rec = Recorder(str(tmp_path))
    monkeypatch.setattr(subprocess, "run", rec.run)
    monkeypatch.setattr(subprocess, "Popen", rec.popen)
    monkeypatch.setattr(netns, "write_sysctl", lambda ns, key, value: rec.calls.append(
        Call(["sysctl", "-n", ns, f"{key}={value}"])))
    yield rec
    rec.close()
