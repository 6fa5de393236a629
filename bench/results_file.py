"""Where every benchmark script puts its figures: one JSON file, stamped with when and where."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path


def write_results(path: str, doc: dict) -> None:
    stamped = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.node(),
               "kernel": platform.release(), **doc}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(stamped, indent=1) + "\n")
