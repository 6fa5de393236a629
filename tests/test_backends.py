"""The backends (netns, docker) behind one interface, chosen from a registry."""

from __future__ import annotations

import inspect
import re

import pytest

from lab import preflight
from lab.errors import LabError
from lab.guest import backends, executor


def test_an_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown backend 'lxc': choose one of netns, docker"):
        backends.backend_class("lxc")
    with pytest.raises(LabError, match=r"--provider: must be one of netns, docker \(got 'lxc'\)"):
        preflight.check_provider("lxc")


def test_netns_runs_a_command_as_is_inside_the_hosts_namespace_and_starts_nothing_at_boot():
    b = backends.backend_class("netns")(plan=None, workdir="/w")
    assert b.command("fe", ["nginx", "-c", "x"]) == ["nginx", "-c", "x"]
    assert b.boot_lines("/w", False) == "" and b.checks() is None and b.destroy("/logs") is None


def test_docker_starts_its_dockerd_from_the_kernels_init():
    lines = backends.backend_class("docker").boot_lines("/w", True)
    assert "dockerd" in lines and "/dev/ubda" in lines


def test_the_executors_phases_have_no_backend_branches():
    source = inspect.getsource(executor.Run) + inspect.getsource(executor.main)
    assert not re.search(r"\bif\b[^\n]*(docker|provider)", source), "a backend branch in the executor"
    assert "containers" not in source
