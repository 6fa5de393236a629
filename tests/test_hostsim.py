"""The guest that plays an ESP-capable host (lab.hostsim) and `lab doctor`'s reasons."""

from __future__ import annotations

from lab import hostsim, preflight
from lab.kernels.kernel import KernelSupport


def test_the_inner_lab_keeps_its_runs_on_guest_tmpfs_and_records_each_status():
    text = hostsim.body([(["doctor"], "/r/0.txt"), (["verify", "--kernel", "host", "t.yaml"], "/r/1.txt")],
                        "/run/x/guest.rc")
    assert f"export LAB_STATE_DIR={hostsim.GUEST_STATE}" in text and hostsim.GUEST_STATE.startswith("/tmp/")
    assert "-m lab doctor > /r/0.txt 2>&1; echo $? > /r/0.txt.rc" in text
    assert "-m lab verify --kernel host t.yaml > /r/1.txt 2>&1; echo $? > /r/1.txt.rc" in text
    assert text.rstrip().endswith("echo 0 > /run/x/guest.rc") and "cgroup" not in text


def test_a_docker_host_gets_cgroups_overlay_and_a_private_etc_docker():
    text = hostsim.body([(["verify"], "/r/0.txt")], "/rc", docker=True)
    assert "mount -t cgroup" in text and "overlay" in text and "mount -t tmpfs tmpfs /etc/docker" in text


def test_doctor_says_why_it_chose_each_kernel(monkeypatch):
    monkeypatch.setattr(preflight, "check_tools", lambda: None)
    monkeypatch.setattr(preflight, "probe_host_kernel", lambda: KernelSupport(True, True, ""))
    host = preflight.choose_kernel("auto")
    assert host.kind == "host" and "accepted a test ESP and AH SA" in host.reason
    assert "no guest to boot" in host.reason
    monkeypatch.setattr(preflight, "probe_host_kernel", lambda: KernelSupport(False, True, "Requested type not found."))
    monkeypatch.setattr(preflight, "find_kernel", lambda: None)
    uml = preflight.choose_kernel("auto")
    assert uml.kind == "uml" and "refused a test ESP SA" in uml.reason and "Requested type not found" in uml.reason
