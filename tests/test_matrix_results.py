"""tools/matrix_results.py: the table of docs/matrix-results.md read from matrix runs' JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parent.parent / "tools" / "matrix_results.py"
_spec = importlib.util.spec_from_file_location("matrix_results", _PATH)
mr = importlib.util.module_from_spec(_spec)
sys.modules["matrix_results"] = mr  # dataclasses look their module up
_spec.loader.exec_module(mr)


def _row(fid, predicted, observed, written=None):
    return {"id": fid, "predicted": predicted, "observed": observed, "written": written,
            "agrees": predicted == observed, "holds": written is None or written == observed}


def _run(root: Path, sub: str, name: str, started: str, rows: list[dict], total: float = 40.0) -> Path:
    d = root / sub
    d.mkdir(parents=True)
    (d / "matrix.json").write_text(json.dumps({
        "topology": name, "flows": len(rows), "written": sum(r["written"] is not None for r in rows),
        "disagreements": [r["id"] for r in rows if not r["agrees"]], "rows": rows}))
    (d / "result.json").write_text(json.dumps({"started": started, "timings": {"total": total}, "errors": []}))
    return d


def test_a_disagreement_fixed_with_a_note_counts_as_fixed(tmp_path):
    before = _run(tmp_path, "a1", "t", "2026-01-01T10:00", [_row("x->y:http", "esp", "dropped", "esp"),
                                                            _row("x->y:imap", "clear", "clear")])
    after = _run(tmp_path, "a2", "t", "2026-01-01T11:00", [_row("x->y:http", "esp", "esp", "esp"),
                                                           _row("x->y:imap", "clear", "clear")])
    text = mr.render(mr.gather([after, before]), {"t": {"x->y:http": "fixed: the model forgot NAT"}})
    assert "| `t` | 2 | 2 | 1 | 1 | 0 | 1 (50 %) | 2 | 40, 40 |" in text
    assert "`x->y:http` (agrees in the last run): fixed: the model forgot NAT" in text


def test_a_rerun_that_happens_to_agree_is_not_called_fixed(tmp_path):
    before = _run(tmp_path, "a1", "t", "2026-01-01T10:00", [_row("x->y:http", "esp", "dropped")])
    after = _run(tmp_path, "a2", "t", "2026-01-01T11:00", [_row("x->y:http", "esp", "esp")])
    text = mr.render(mr.gather([before, after]), {})
    assert "| `t` | 1 | 1 | 1 | 0 | 0 | 0 (0 %) | 2 |" in text
    assert "**unexplained**" in text
    text = mr.render(mr.gather([before, after]), {"t": {"x->y:http": "a race on the responder, open"}})
    assert "| `t` | 1 | 1 | 1 | 0 | 0 | 0 (0 %) | 2 |" in text and "a race on the responder, open" in text


def test_a_written_expectation_failing_on_the_wire_is_listed(tmp_path):
    run = _run(tmp_path, "a1", "t", "2026-01-01T10:00", [_row("x->y:http", "dropped", "dropped", "esp")])
    text = mr.render(mr.gather([run]), {})
    assert "`x->y:http`: the written expectation failed in the last run" in text


def test_a_folder_without_matrix_json_is_refused(tmp_path, capsys):
    assert mr.main([str(tmp_path)]) == 2
    assert "no matrix.json" in capsys.readouterr().err
