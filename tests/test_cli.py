"""The CLI on bad input: one line per problem naming file, line and field; exit 2; nothing started."""

from __future__ import annotations

from pathlib import Path

from lab.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "topologies" / "exchange-fe-be-http.yaml"


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_validate_the_shipped_topologies(capsys):
    code, out, _ = run(capsys, "validate", *sorted(str(p) for p in (ROOT / "topologies").glob("*.yaml")))
    assert code == 0
    assert "exchange-fe-be-http.yaml: ok" in out


def test_unknown_gateway_names_file_line_and_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT.read_text().replace("    gateway: fw\n    policy: fe-to-be-http", "    gateway: fw2\n    policy: fe-to-be-http"))
    code, _, err = run(capsys, "verify", str(bad))
    assert code == 2
    assert f"{bad}:18: hosts.fe.gateway:" in err and "fw2" in err


def test_wrong_indentation_is_a_syntax_error_with_a_line(tmp_path, capsys):
    bad = tmp_path / "indent.yaml"
    bad.write_text(DEFAULT.read_text().replace("    role: front-end\n", "      role: front-end\n"))
    code, _, err = run(capsys, "verify", str(bad))
    assert code == 2
    assert err.startswith(f"{bad}:")


def test_bad_address_and_unknown_host_reported_together(tmp_path, capsys):
    bad = tmp_path / "two.yaml"
    text = DEFAULT.read_text().replace("interfaces: {dmz: 10.10.1.10}", "interfaces: {dmz: 10.10.1.300}")
    text = text.replace("{from: fe, to: dc, service: kerberos", "{from: fe, to: dc2, service: kerberos")
    bad.write_text(text)
    code, _, err = run(capsys, "validate", str(bad))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) >= 2, err
    assert all(line.startswith(f"{bad}:") for line in lines)


def test_missing_file(capsys):
    code, _, err = run(capsys, "validate", "/nonexistent/topo.yaml")
    assert code == 2 and "/nonexistent/topo.yaml" in err


def test_compile_prints_the_connections(capsys):
    code, out, _ = run(capsys, "compile", str(DEFAULT), "--host", "fe")
    assert code == 0 and "peer-be" in out and '"start_action": "trap"' in out


def test_help_explains_the_verbs(capsys):
    try:
        code = main(["--help"])
    except SystemExit as exc:  # argparse exits; a main that returned must say 0 as well
        code = exc.code
    assert code == 0
    out = capsys.readouterr().out
    for verb in ("verify", "validate", "compile", "cleanup", "doctor"):
        assert verb in out


def test_a_missing_tool_is_one_line_and_exit_2(monkeypatch, capsys):
    import shutil

    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **kw: None if name == "tcpdump" else real_which(name, *a, **kw))
    code, _, err = run(capsys, "doctor")
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "tcpdump is not installed" in err and "make setup" in err
