"""Conformance: every expectation of every topology in topologies/ is its own pytest case.

One live lab per topology, shared by its cases (the first case that needs it runs it). The
lab runs on a kernel with ESP/AH: the host's if it has them, otherwise a UML guest; these
cases never skip. LAB_TOPOLOGIES=glob (or several, space-separated) narrows the set; LAB_KERNEL picks the kernel;
LAB_PROVIDER=docker runs every host as a container (see test_docker.py).

The shared machinery (LabRuns: one run per topology; the report index; the verdict tables
under pytest's summary; the `lab_runs` fixture) lives in the package's pytest plugin,
lab/pytest_plugin.py, which users load in their own repositories (`--lab-topologies`).
"""

from __future__ import annotations

import functools
import glob
import os
import shlex
from pathlib import Path

import pytest

import durations
from lab.model.load import load_topology
from lab.pytest_plugin import expectation_id

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports" / "conformance"


def topology_patterns() -> list[str]:
    """LAB_TOPOLOGIES: one glob, or several separated by spaces, quoted as in a shell (a subset
    such as CI's). The default is not split: the checkout's own path may hold spaces."""
    given = os.environ.get("LAB_TOPOLOGIES")
    return shlex.split(given) if given else [glob.escape(str(ROOT / "topologies")) + "/*.yaml"]


def topology_files() -> list[str]:
    files = sorted({f for p in topology_patterns() for f in glob.glob(p)})
    if not files:  # a suite that found nothing to run must not pass
        raise pytest.UsageError(f"no topology file matches {' '.join(topology_patterns())}")
    return files


@functools.cache
def topology(path: str):
    """Each file read once per process: collection asks for every topology from several
    places (8 reads of each took 25 s of every worker's start on a loaded machine)."""
    return load_topology(path)


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run scenarios marked slow (full-length Windows timers)")
    parser.addoption("--shard", metavar="K/N", default=os.environ.get("LAB_SHARD"),
                     help="run only the K-th of N shares of the topologies (1-based; also LAB_SHARD); "
                          "conformance/merge.py joins the shards' reports")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: full-length Windows timers (minutes); run with --run-slow")
    config.addinivalue_line("markers", "xdist_group: cases that share one lab run (pytest-xdist --dist loadgroup)")
    if not config.getoption("lab_reports"):  # the plugin's LabRuns writes here
        config.option.lab_reports = str(REPORTS)
    if hasattr(config.option, "loadscopereorder"):
        # xdist would reorder the groups by their number of cases; the order of the items
        # (longest group first, pytest_collection_modifyitems) is the one wanted.
        config.option.loadscopereorder = False


def group_of(item) -> str:
    """The lab run a case needs: its topology, or its module for cases with labs of their own.
    All cases of a group run on one xdist worker and in one shard, so each lab runs once."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    for key in ("expectation_case", "failover_case", "topology_path", "path"):
        value = params.get(key)
        if isinstance(value, tuple | list) and value:
            value = value[0]
        if isinstance(value, str):
            return Path(value).stem
    return item.module.__name__  # also an empty parametrization (nothing to run)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise pytest.UsageError(f"--shard {text!r}: expected K/N, e.g. 2/4") from None
    if not 1 <= k <= n:
        raise pytest.UsageError(f"--shard {text!r}: K must be between 1 and N")
    return k, n


def in_shard(groups: list[str], shard: tuple[int, int] | None, seconds: dict[str, float] | None = None) -> set[str]:
    """Groups dealt into N shares of about equal time by their recorded durations (every
    machine reads the same committed file, so the shares agree), each group in exactly one."""
    if not shard:
        return set(groups)
    k, n = shard
    return durations.deal(groups, n, durations.load() if seconds is None else seconds)[k - 1]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (loadgroup)
def pytest_collection_modifyitems(config, items):
    keep, deselected = [], []
    wanted = in_shard([group_of(i) for i in items], parse_shard(config.getoption("--shard")))
    for item in items:
        group = group_of(item)
        if ("slow" in item.keywords and not config.getoption("--run-slow")) or group not in wanted:
            deselected.append(item)  # deselected, not skipped: slow ones run on request
            continue
        item.add_marker(pytest.mark.xdist_group(name=group))
        keep.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    # Longest groups first (LPT): xdist hands groups out in this order (see pytest_configure),
    # so the long ones start at once and the suite ends on short ones, not one worker alone.
    # Failover groups go before all: their outages are timings, and started beside the
    # container groups (the longest) both planned moves failed in a run at load 6-10 (12.4 s and
    # 7.7 s of 6 allowed) that passed alone minutes later (3.0 s, 3.7 s).
    order = durations.longest_first([group_of(i) for i in keep], durations.load())
    timed = {group_of(i) for i in keep if "failover_case" in getattr(i, "fixturenames", ())}
    rank = {g: (g not in timed, n) for n, g in enumerate(order)}
    items[:] = sorted(keep, key=lambda i: rank[group_of(i)])  # stable: a group's cases keep their order


def pytest_generate_tests(metafunc):
    if "expectation_case" in metafunc.fixturenames:
        params, ids = [], []
        for path in topology_files():
            topo = topology(path)
            for exp in topo.expectations:
                params.append((path, exp.id))
                ids.append(expectation_id(topo, exp))
        metafunc.parametrize("expectation_case", params, ids=ids)
    if "failover_case" in metafunc.fixturenames:
        params = []
        for path in topology_files():
            topo = topology(path)
            for f in topo.failovers:
                marks = [pytest.mark.slow] if f.slow else []
                params.append(pytest.param((path, f.name), id=f"{topo.name}::failover:{f.name}[B9]", marks=marks))
        metafunc.parametrize("failover_case", params)
    if "topology_path" in metafunc.fixturenames:
        # Checks on a verify run: only topologies that have flows to verify (the failover-only
        # ones are covered by their failover cases).
        paths = [p for p in topology_files() if topology(p).expectations]
        metafunc.parametrize("topology_path", paths, ids=[Path(p).stem for p in paths])
