#!/usr/bin/env python3
"""Join the reports of conformance shards (`--shard K/N`, one per machine) into one.

usage: python conformance/merge.py DEST SHARD_DIR [SHARD_DIR ...]

Each SHARD_DIR is a shard's `reports/conformance` folder (its junit.xml, .rows/ and one folder
per topology). DEST gets every topology's folder, one junit.xml with every shard's test
suites, and one index.html over all topologies. Exit status 1 when a shard had failures or a
shard folder has no junit.xml (a shard that never reported must not pass as green).
"""

from __future__ import annotations

import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab.pytest_plugin import collected_rows  # noqa: E402


def merge_junit(files: list[Path]) -> tuple[ET.ElementTree, int]:
    root = ET.Element("testsuites")
    bad = 0
    for f in files:
        tree = ET.parse(f).getroot()
        for suite in ([tree] if tree.tag == "testsuite" else list(tree)):
            root.append(suite)
            bad += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    return ET.ElementTree(root), bad


def merge(dest: Path, shards: list[Path]) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / ".rows").mkdir(exist_ok=True)
    missing = [s for s in shards if not (s / "junit.xml").exists()]
    for i, shard in enumerate(shards, 1):
        for item in shard.iterdir():
            if item.is_dir() and item.name != ".rows":
                shutil.copytree(item, dest / item.name, dirs_exist_ok=True)
        for rows in sorted((shard / ".rows").glob("*.json")) if (shard / ".rows").is_dir() else []:
            shutil.copy(rows, dest / ".rows" / f"shard{i}-{rows.name}")
    tree, bad = merge_junit([s / "junit.xml" for s in shards if s not in missing])
    tree.write(dest / "junit.xml", encoding="utf-8", xml_declaration=True)
    from lab.report.index import write_index

    rows, _ = collected_rows(dest / ".rows")
    write_index(rows, str(dest / "index.html"))
    print(f"{len(shards)} shards, {len(rows)} topologies, {bad} failed or errored cases -> "
          f"{dest / 'junit.xml'}, {dest / 'index.html'}")
    for s in missing:
        print(f"{s}: no junit.xml (the shard did not finish)", file=sys.stderr)
    return 1 if bad or missing else 0


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    return merge(Path(argv[0]), [Path(a) for a in argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
