"""The checkout and the Python running `lab` may live anywhere: what the UML guest hides under
its own /tmp and /run tmpfs is mounted back from the host, quoted, and nothing more."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from lab.kernels import uml
from lab.kernels.base import RunFiles


def test_paths_under_tmp_and_run_are_bound_back_topmost_only(tmp_path):
    checkout = tmp_path / "a checkout"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    assert str(tmp_path).startswith("/tmp/")
    paths = [str(checkout), str(checkout / ".venv"), str(checkout / ".venv" / "bin"), "/usr/lib", "/var/tmp"]
    assert uml.hidden_paths(paths) == [str(checkout)]


def test_the_masked_roots_themselves_and_missing_paths_are_never_bound(tmp_path):
    assert uml.hidden_paths(["/tmp", "/run", "/tmp/", str(tmp_path / "absent")]) == []


def test_a_symlink_into_tmp_binds_its_target(tmp_path):
    target = tmp_path / "python-env"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    assert str(target) in uml.hidden_paths([str(link)])


def test_bind_lines_quote_paths_with_spaces():
    text = uml.bind_lines(["/tmp/ipsec lab ci"])
    assert "mkdir -p '/tmp/ipsec lab ci' && mount -t hostfs -o '/tmp/ipsec lab ci' none '/tmp/ipsec lab ci'" in text
    assert uml.bind_lines([]) == ""


def test_the_init_binds_a_python_under_tmp_before_using_it(tmp_path, monkeypatch):
    env = tmp_path / "x y" / ".venv"
    (env / "bin").mkdir(parents=True)
    python = env / "bin" / "python"
    python.write_text("")
    monkeypatch.setattr(sys, "executable", str(python))
    rundir = tmp_path / "run"
    rundir.mkdir()
    plan = SimpleNamespace(provider="netns", image=None, hosts=[], probes=[], failover=None)
    guest = uml.UmlGuest("r1", RunFiles(str(rundir)), uml.UmlKernel(uml.STOCK_UML, uml.STOCK_MODULES), plan)
    text = open(guest._write_init()).read()
    bind = text.index(f"mount -t hostfs -o '{tmp_path}")
    assert text.index("mount -t tmpfs tmpfs /tmp") < bind < text.index(f"'{python}' -S -m lab.guest.executor")
    assert "halt" not in text and "sysrq-trigger" in text
    assert uml.GUEST_WORKDIR != "/tmp/lab"  # a checkout at /tmp/lab must not become the guest's workdir


def test_a_state_directory_with_spaces_is_refused_in_one_line(monkeypatch, capsys):
    from lab.cli import main

    monkeypatch.setenv("LAB_STATE_DIR", "/var/tmp/my lab")
    assert main(["cleanup"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "LAB_STATE_DIR" in err


def test_the_boot_loads_the_modules_a_plan_uses():
    from lab.compile.plan import build_plan
    from lab.model.load import load_topology

    def mods(name):
        return set(uml.modules_for(build_plan(load_topology(f"topologies/{name}.yaml"), "t", "/tmp/x")).split())

    assert {"esp4", "ah4", "veth", "bridge"} <= mods("exchange-fe-be-http")
    assert not mods("exchange-fe-be-http") & {"cls_u32", "act_pedit", "nf_tables"}
    assert {"cls_u32", "cls_matchall", "act_nat"} <= mods("firewall-missing-esp")
    assert "act_pedit" in mods("ah-vs-esp")
    assert set(uml.MODULES.split()) == set(uml.modules_for(None).split())  # no plan: all of them


def test_the_guest_kernel_registers_no_device_it_does_not_use():
    argv = uml.UmlGuest("r1", RunFiles("/var/tmp/x"), uml.UmlKernel(uml.STOCK_UML, uml.STOCK_MODULES)).argv("/i.sh")
    # con0 carries the console (init's output and the executor's progress); con=none must come first
    assert argv.index("con=none") < argv.index("con0=null,fd:1")
    assert {"pty.legacy_count=0", "ssl=none"} <= set(argv)


def test_only_the_kernels_lines_about_unconfigured_consoles_leave_the_console_log():
    assert uml.unconfigured_line("setup_one_line failed for device 7 : configured as 'none'\n")
    assert not uml.unconfigured_line("setup_one_line failed for device 7 : bad channel 'fd:9'\n")
    assert not uml.unconfigured_line("Failed to initialize ubd device 0 :Couldn't determine size of device's file\n")


def test_the_modules_tree_and_the_modprobe_wrapper_are_made_on_the_host(tmp_path):
    modules = tmp_path / "uml-modules"
    (modules / "6.1.176").mkdir(parents=True)
    (tmp_path / "run").mkdir()
    tree, wrapper = uml.write_module_files(str(tmp_path / "run"), modules)
    assert (tmp_path / "run" / "modules" / "lib" / "modules" / "6.1.176").resolve() == modules / "6.1.176"
    assert os.access(wrapper, os.X_OK) and "modprobe -d /run/lab-modules" in open(wrapper).read()


def test_the_init_starts_no_process_for_what_the_host_prepared(tmp_path):
    rundir = tmp_path / "run"
    rundir.mkdir()
    plan = SimpleNamespace(provider="netns", image=None, hosts=[], probes=[], failover=None)
    guest = uml.UmlGuest("r1", RunFiles(str(rundir)), uml.UmlKernel(uml.STOCK_UML, uml.STOCK_MODULES), plan)
    text = open(guest._write_init()).read()
    assert not {"uname", "chmod", "mkdir", "printf"} & set(uml.PRELUDE.split())  # binds aside: no such process
    assert f"echo {rundir}/modprobe > /proc/sys/kernel/modprobe" in text
    assert "ip link set lo up" in text  # no warm-up batch for a plan without IPsec: the loopback alone
