"""The machine-readable result: RunReport.to_dict() as indented JSON, tagged with its schema.

Schema 2 (was 1): a verdict's `expected` and `observed` are the bare result ("esp", or for
`observed` also "unobserved", "not judged", "dropped-elsewhere"); an expectation's IKE outcome
is in `expected_ike` and the one seen in `ike`, no longer appended as ", IKE established".
"""

from __future__ import annotations

import json
from pathlib import Path

from lab.verdicts.model import RunReport

SCHEMA = "ipsec-lab/result/2"


def report_dict(report: RunReport) -> dict:
    return {"schema": SCHEMA, **report.to_dict()}


def write_json(report: RunReport, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report_dict(report), indent=2, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path
