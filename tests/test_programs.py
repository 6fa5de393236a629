"""One table of programs and packages (lab/programs.txt): the code starts nothing that is not in
it, the Makefile installs exactly its packages, and a missing one stops doctor and a run with
one line naming the Debian package, before anything starts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lab import cleanup, programs
from lab.cli import main

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "topologies" / "exchange-ssl-fe-real.yaml"

# Always there on Debian (Essential: yes, or the shell itself): need no row in the table.
ESSENTIAL = {"sh", "mkdir", "ln", "chmod", "sync", "sleep", "seq", "cat", "rm", "rmdir", "echo", "printf",
             "true", "test", "[", "umount", "env", "chroot", "tar", "truncate", "uname"}
SHELL_WORDS = {"for", "do", "done", "if", "then", "else", "fi", "export", "cd", "exit", "kill", "wait",
               "read", "exec", "break", "rc=$?", "sock=unix://{d}/docker.sock", "while", "trap",
               "mark", "mark()", "case", "esac", "tls|kcm|espintcp|tcp-ulp-*|net-pf-41|binfmt-*)"}  # mark: the init's own function

# Where Python code starts a program: subprocess.run/Popen([...]), "argv": [...], argv = [...],
# and the program after `ip netns exec NS` (or lab.guest.netns.run_in(NS, ...)) or `sh -c "..."`.
CALLS = re.compile(r'(?:(?:subprocess\.(?:run|Popen|check_output|call)|\b_run)\(\s*|"argv":\s*|\bargv\s*=\s*)\[\s*"([^"]+)"')
IN_NETNS = re.compile(r'(?:"exec",|\brun_in\()\s*[\w\[\]"\'.]+,\s*"([^"]+)"')


def started_by_python() -> set[str]:
    found = set()
    for path in (ROOT / "lab").rglob("*.py"):
        text = path.read_text()
        found |= set(CALLS.findall(text)) | set(IN_NETNS.findall(text))
    return found


def shell_commands(script: str) -> set[str]:
    """The first word of every command of a shell script (good enough for the lab's own)."""
    words = set()
    for line in script.splitlines():
        line = line.split("#", 1)[0] if not line.startswith("#!") else ""
        for part in re.split(r"&&|\|\||;|\||\$\(|\bdo\b|\bthen\b", line):
            tokens = part.split()
            while tokens and ("=" in tokens[0] and not tokens[0].startswith("=") or tokens[0] in ("(", "exec")):
                tokens.pop(0)  # VAR=value, a subshell's "(" or exec before a command
            if tokens:
                words.add(tokens[0].strip("{}()"))
    return {w for w in words if w and not w.startswith(("$", ">", "'", '"', "-")) and w not in SHELL_WORDS}


def started_by_shell() -> set[str]:
    from lab.guest.containers import init_snippet
    from lab.images import SEED_BODY
    from lab.kernels import uml

    fill = {k: "X" for k in ("run_id", "modules", "module_list", "plan", "secrets",
                             "rcfile", "workdir", "d", "tarball", "tag", "module_tree", "wrapper")}
    fill.update(backend="", docker="", binds="", python="python3", python_env="PYTHONPATH=X ", python_flags="-S ",
                imports="docker -H X import X X",
                kernel_ready=uml.KERNEL_READY.format(module_list="X", crypto=uml.CRYPTO_WARMUP.format(batch="X", wrapper="X")))
    scripts = [uml.INIT.format(**fill), uml.INIT_IN_TURN.format(**fill), init_snippet("/w", seeded=True),
               SEED_BODY.format(**fill), uml.LOOPBACK,
               # the wrapper's `case` line names modules it refuses, not programs
               "\n".join(x for x in uml.MODPROBE_WRAPPER.splitlines() if not x.startswith("case"))]
    return set().union(*(shell_commands(s) for s in scripts)) - {"X"}


def listed() -> set[str]:
    return {Path(p.name).name for p in programs.table()}


def test_every_program_the_code_starts_is_in_the_table():
    started = {Path(p).name for p in started_by_python() | started_by_shell()} - ESSENTIAL
    started.discard("/usr/lib/ipsec/charon")
    assert {"tcpdump", "nginx", "dovecot", "krb5kdc", "slapd", "curl", "kinit", "ldapsearch", "dockerd", "nft",
            "tc", "modprobe", "mount", "debootstrap", "kadmin.local", "slapadd", "containerd"} <= started, started
    assert started - listed() == set(), "started by the lab but not in lab/programs.txt"


def test_charon_and_its_plugins_are_in_the_table():
    from lab.guest import charon

    assert charon.CHARON in {p.name for p in programs.table()}
    assert {"vici", "openssl", "socket-default"} <= set(charon.PLUGINS.split())


def test_the_makefile_installs_exactly_the_table():
    if not shutil.which("make"):
        pytest.skip("make is not installed")  # the README's first command installs it
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "packages"], capture_output=True, text=True, check=True)
    assert out.stdout.split() == programs.packages()
    assert "nginx-light" in out.stdout and "user-mode-linux" in out.stdout


def _without(monkeypatch, *names):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda n, *a, **kw: None if n in names else real_which(n, *a, **kw))


def test_doctor_names_the_package_of_a_missing_server_and_exits_2(monkeypatch, capsys):
    _without(monkeypatch, "nginx")
    code = main(["doctor"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "nginx is not installed (Debian package nginx-light)" in err, err


def test_doctor_names_every_missing_program_on_one_line(monkeypatch, capsys):
    _without(monkeypatch, "nginx", "kinit", "dockerd")
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    for text in ("nginx-light", "krb5-user", "docker.io"):
        assert text in err


def test_a_run_that_needs_a_missing_server_stops_before_anything_starts(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path / "state"))
    _without(monkeypatch, "nginx")
    main(["doctor"])
    doctor_line = capsys.readouterr().err
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **kw: started.append(a) or pytest.fail("started"))
    code = main(["verify", str(REAL), "--report", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code == 2 and err == doctor_line
    assert not started and not (tmp_path / "state").exists() and not (tmp_path / "report").exists()
    assert cleanup.state_dir() == tmp_path / "state"


def test_a_design_without_real_servers_does_not_need_them():
    from lab.model.load import load_topology

    needs = programs.needs_of(load_topology(str(ROOT / "topologies" / "exchange-fe-be-http.yaml")))
    assert needs == {"run", "uml"}
    needs = programs.needs_of(load_topology(str(REAL)))
    assert {"nginx", "dovecot", "curl"} <= needs
