"""The import graph of `lab.*`: no cycle, and the layers point one way.

Every `import` counts, also the ones inside functions (a function-level import is how a cycle
hides). The graph is read with `ast`, without importing anything, and checked with the standard
library's graphlib, which names the modules of a cycle.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parent.parent / "lab"


def module_names() -> dict[str, Path]:
    out = {}
    for path in LAB.rglob("*.py"):
        parts = path.relative_to(LAB.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = module_names()


def _resolve(name: str) -> str | None:
    """A dotted name imported from `lab` -> the module that defines it."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    found: set[str | None] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {_resolve(a.name) for a in node.names if a.name.split(".")[0] == "lab"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "lab":
            # `from lab.guest import netns` imports the module lab.guest.netns
            found |= {_resolve(f"{node.module}.{a.name}") for a in node.names}
    # A package's __init__ runs before its modules: `lab` itself imports nothing worth a node.
    return {m for m in found if m and m not in (module, "lab")}


GRAPH = {m: imports_of(m) for m in MODULES}


def test_no_import_cycle_among_lab_modules():
    try:
        tuple(graphlib.TopologicalSorter(GRAPH).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_the_check_sees_a_cycle_when_there_is_one():
    graph = {**GRAPH, "lab.contract": GRAPH["lab.contract"] | {"lab.runner"}}
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(graph).static_order())


def _reaches(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in GRAPH[todo.pop()] - seen:
            seen.add(m)
            todo.append(m)
    return seen


@pytest.mark.parametrize("layer, forbidden", [
    ("lab.verdicts", "lab.compile"),  # judging reads the plan and the wire, not the compiler
    ("lab.kernels", "lab.guest"),  # a kernel runs the executor; it does not reach into it
    ("lab.guest", "lab.model"),  # the guest is slow: no model, no YAML, no compiler
    ("lab.guest", "lab.compile"),
    ("lab.contract", "lab"),  # standard library only: both sides import it
])
def test_layers(layer, forbidden):
    for module in (m for m in GRAPH if m == layer or m.startswith(layer + ".")):
        bad = sorted(m for m in GRAPH[module] if m == forbidden or m.startswith(forbidden + ".")) \
            if forbidden != "lab" else sorted(GRAPH[module])
        assert not bad, f"{module} imports {', '.join(bad)}"
