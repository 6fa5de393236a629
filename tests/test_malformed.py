"""Malformed variants of every shipped topology: `lab validate` and `lab compile` accept them or
answer with `FILE:LINE: field: message` lines and exit 2, quickly, never with a traceback.

A seeded generator mutates the files' values and keys (wrong types, decimals, NaN, huge numbers,
empty strings, names that do not exist or exist elsewhere, deleted and duplicated keys, control
characters, cut files), so that a new key cannot reopen a hole. The default run is small;
LAB_FUZZ_VARIANTS=3000 (and LAB_FUZZ_SEED) runs a larger one.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from lab.cli import main

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "topologies").glob("*.yaml")) + sorted((ROOT / "tests" / "data").glob("good*.yaml"))
SEED = int(os.environ.get("LAB_FUZZ_SEED", "10"))
VARIANTS = int(os.environ.get("LAB_FUZZ_VARIANTS", "160"))
# CPU seconds per run (CPU, not wall clock: other work on the machine must not fail the test);
# a healthy run takes well under 1 s.
SECONDS = 5.0

# Values a designer could type by mistake, or a hostile file could hold.
VALUES = [
    None, True, False, 0, -1, 1, 2, 3, 80, 80.0, 14.0, 0.0, 500.0, 0.5, 1e300, 10**30, -(10**30),
    float("nan"), float("inf"), float("-inf"), "", " ", "x", "nosuch", "me", "any", "esp", "ah",
    "tcp", "udp", "icmp", "require", "10.10.2.5/24", "10.0.0.0/8", "0.0.0.0/0", "10.10.1.10",
    "999.1.1.1", "10.10.1.0", "a\x01b", "a\nb", "a\u2028b", "é", "x" * 300, "tcp/99999", "udp/0",
    "B99", [], {}, ["x"], {"x": 1}, [None], [[[]]],
]


def _walk(node, path=()):
    """Every (path, value) of a parsed file, containers included."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, path + (i,))


def _names(data) -> list[str]:
    """Names the file defines: a value swapped for one of them refers to the wrong kind of thing."""
    out = []
    for section in ("hosts", "networks", "policies", "clusters"):
        if isinstance(data.get(section), dict):
            out += [str(k) for k in data[section]]
    return out


def _dump(data) -> str:
    stream = io.StringIO()
    YAML(typ="rt").dump(data, stream)
    return stream.getvalue()


def _mutate_data(rng: random.Random, text: str) -> tuple[str, str, str | None]:
    """(new text, what changed, the key given a float or None)."""
    data = YAML(typ="rt").load(text)
    places = list(_walk(data))[1:]
    path, _ = rng.choice(places)
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    kind = rng.choice(["value", "value", "value", "name", "delete", "rename", "nest"])
    where = ".".join(map(str, path))
    if kind == "value":
        value = rng.choice(VALUES)
        parent[last] = value
        return _dump(data), f"{where}={value!r}"[:80], str(last) if isinstance(value, float) else None
    if kind == "name":
        name = rng.choice(_names(data) or ["x"])
        parent[last] = name
        return _dump(data), f"{where}={name}", None
    if kind == "delete":
        del parent[last]
        return _dump(data), f"del {where}", None
    if kind == "rename" and isinstance(parent, dict):
        value = parent.pop(last)
        parent[rng.choice(["nosuch", "Port", "from ", "1", 1, None, True, "me"])] = value
        return _dump(data), f"rename {where}", None
    parent[last] = {"a": [{"b": [parent[last]]}]}
    return _dump(data), f"nest {where}", None


def _mutate_text(rng: random.Random, text: str) -> tuple[str, str, None]:
    lines = text.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    kind = rng.choice(["dup", "drop", "cut", "control", "quote", "tab"])
    if kind == "dup":
        return "".join(lines[:i + 1] + lines[i:]), f"dup line {i + 1}", None
    if kind == "drop":
        return "".join(lines[:i] + lines[i + 1:]), f"drop line {i + 1}", None
    if kind == "cut":
        cut = rng.randrange(len(text))
        return text[:cut], f"cut at {cut}", None
    at = rng.randrange(len(text))
    insert = {"control": rng.choice("\x00\x01\x07\x1b\x7f"), "quote": rng.choice("'\""), "tab": "\t"}[kind]
    return text[:at] + insert + text[at:], f"{kind} at {at}", None


def _variants() -> list[tuple[str, str, str, str | None]]:
    rng = random.Random(SEED)
    texts = {p: p.read_text() for p in SOURCES}
    out = []
    for n in range(VARIANTS):
        source = rng.choice(SOURCES)
        mutate = _mutate_data if rng.random() < 0.75 else _mutate_text
        text, what, float_key = mutate(rng, texts[source])
        out.append((f"{n:04d}-{source.stem}: {what}", source.name, text, float_key))
    return out


def _run(capsys, *argv: str) -> tuple[int, str, str, float]:
    start = time.process_time()
    code = main(list(argv))  # a traceback fails the test: that is what it looks for
    seconds = time.process_time() - start
    out = capsys.readouterr()
    return code, out.out, out.err, seconds


# The only keys where a decimal is a value of its own; anywhere else an accepted float was
# silently dropped or rounded (`port: 80.0` once widened a rule to all of TCP).
DECIMAL_KEYS = {"max_seconds", "rate", "time_scale"}


def check_one(capsys, path: Path, float_key: str | None = None) -> None:
    """Both verbs on one file: accepted, or exit 2 with only well-formed problem lines."""
    line = re.compile(rf"^{re.escape(str(path))}:[1-9][0-9]*: \S[^\n]*$")
    for verb in ("validate", "compile"):
        code, out, err, seconds = _run(capsys, verb, str(path))
        assert seconds < SECONDS, f"{verb} took {seconds:.1f} s"
        if code == 0 and float_key is not None:
            assert float_key in DECIMAL_KEYS, f"{verb} accepted a decimal at {float_key}"
        if code == 0:
            if verb == "compile":
                json.loads(out)
            continue
        assert code == 2, f"{verb} exit {code}: {err}"
        problems = err.rstrip("\n").split("\n")
        assert problems, f"{verb}: exit 2 and nothing said"
        for p in problems:
            assert line.match(p), f"{verb}: not FILE:LINE: field: message: {p!r}"
            assert len(p) < 2000, f"{verb}: a {len(p)}-character line"
            assert p.isprintable(), f"{verb}: a control character in {p!r}"
        numbers = [int(p[len(str(path)) + 1:].split(":", 1)[0]) for p in problems]
        assert numbers == sorted(numbers), f"{verb}: problems out of line order: {problems}"


_ALL = _variants()


@pytest.mark.parametrize("source, text, float_key", [v[1:] for v in _ALL], ids=[v[0] for v in _ALL])
def test_malformed_variant(tmp_path, capsys, source, text, float_key):
    path = tmp_path / source
    path.write_text(text, encoding="utf-8")
    check_one(capsys, path, float_key)
