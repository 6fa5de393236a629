"""lab diff (static: predictions, nothing started) and lab setup --system (the shared list)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lab.model.load import load_topology
from lab.predict.diff import changes, markdown
from lab.predict.matrix import predict_matrix

ROOT = Path(__file__).resolve().parent.parent
TOPO = ROOT / "topologies"


def _lab(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, cwd=cwd)


def _results(path):
    t = load_topology(path)
    return t, {p.id: (p.flow.source, p.flow.destination, p.flow.service.name, p.result) for p in predict_matrix(t)}


def test_kb821839_a_to_b_changes_exactly_http_from_the_front_end():
    _, old = _results(TOPO / "kb821839-a.yaml")
    new_t, new = _results(TOPO / "kb821839-b.yaml")
    found = changes(old, new, new_t)
    assert [c.line() for c in found] == ["fe -> be http: clear -> esp"]
    assert found[0].covered  # kb821839-b writes fe->be:http esp
    md = markdown(found, "a", "b", True, (len(old), len(new)))
    assert "| `fe -> be http` | clear | esp | yes |" in md


def test_cli_static_diff_and_fail_uncovered(tmp_path):
    done = _lab("diff", "--static", str(TOPO / "kb821839-a.yaml"), str(TOPO / "kb821839-b.yaml"))
    assert done.returncode == 0 and done.stdout.strip() == "fe -> be http: clear -> esp"
    # The same change with the expectation removed from NEW: uncovered, so --fail-uncovered exits 1.
    text = (TOPO / "kb821839-b.yaml").read_text().replace(
        "  - {from: fe, to: be, service: http, result: esp, behaviour: B6}\n", "")
    new = tmp_path / "kb821839-b.yaml"
    new.write_text(text)
    done = _lab("diff", "--static", "--fail-uncovered", str(TOPO / "kb821839-a.yaml"), str(new))
    assert done.returncode == 1 and "not covered by NEW's expectations" in done.stdout


def test_base_git_ref_compares_a_file_with_its_past(tmp_path):
    def git(*a):
        subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)
    git("init", "-q")
    design = tmp_path / "design.yaml"
    design.write_text((TOPO / "kb821839-a.yaml").read_text())
    git("add", "design.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    design.write_text((TOPO / "kb821839-b.yaml").read_text().replace("name: kb821839-b", "name: kb821839-a"))
    done = _lab("diff", "--static", "--base", "HEAD", str(design))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fe -> be http: clear -> esp"


def test_bad_base_is_one_line_exit_2(tmp_path):
    done = _lab("diff", "--static", "--base", "no-such-ref", str(TOPO / "kb821839-b.yaml"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def test_setup_reads_the_makefile_list():
    from lab.system_setup import packages

    names = packages()
    assert {"strongswan-charon", "user-mode-linux", "graphviz", "nginx-light"} <= set(names)
    from lab.programs import packages as table

    assert names == table() and "lab/programs.txt" in (ROOT / "Makefile").read_text()
    done = _lab("setup", "--system", "--dry-run")
    assert done.returncode == 0 and done.stdout.startswith("setup: ")


def test_predict_cli_json_and_lint_exit_status(tmp_path):
    import json

    done = _lab("predict", "--json", str(TOPO / "ah-vs-esp.yaml"))
    doc = json.loads(done.stdout)
    assert done.returncode == 0 and {f["id"]: f["result"] for f in doc["flows"]}["fe->be:pop3"] == "ah"
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text((TOPO / "ah-vs-esp.yaml").read_text().replace(
        "{from: fe, to: be, service: imap, result: esp, behaviour: B2}", "{from: fe, to: be, service: imap, result: clear}"))
    done = _lab("predict", "--lint", str(wrong))
    assert done.returncode == 1
    assert "wrong.yaml:" in done.stderr and "written clear, the model predicts esp" in done.stderr


def test_services_without_matrix_is_one_line_exit_2():
    done = _lab("verify", str(TOPO / "kb821839-a.yaml"), "--services", "http")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "--matrix" in done.stderr
    done = _lab("predict", str(TOPO / "kb821839-a.yaml"), "--services", "nope")
    assert done.returncode == 2 and "--services: unknown service 'nope'" in done.stderr
