"""The Docker provider's pieces that need no lab: image tags, the image store, dockerd's command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from types import SimpleNamespace as NS

import pytest

from lab import images
from lab.cli import parser
from lab.guest import charon, containers


def test_the_tag_derives_from_the_content():
    assert images.image_id() == images.image_id()
    assert len(images.image_id()) == 12
    assert images.tag().startswith("ipsec-lab/strongswan:")
    assert images.image_id(packages=images.PACKAGES + ("tcpdump",)) != images.image_id()
    assert images.image_id(suite="trixie") != images.image_id()
    assert images.image_id(script=images.TRIM_SCRIPT + "true\n") != images.image_id()
    # The order packages are listed in does not make a new image.
    assert images.image_id(packages=tuple(reversed(images.PACKAGES))) == images.image_id()


def _owner(path: str) -> str | None:
    """The Debian package that ships `path` on this machine (usrmerge: try /bin too)."""
    for p in dict.fromkeys((path, path.replace("/usr/", "/", 1))):
        res = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True)
        if res.returncode == 0:
            return res.stdout.split(":")[0]
    return None


def _with_dependencies(packages) -> set[str]:
    """`packages` and everything they depend on, as installed here (the image gets the same)."""
    seen, todo = set(), list(packages)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        res = subprocess.run(["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", name],
                             capture_output=True, text=True)
        for dep in res.stdout.replace("|", ",").split(","):
            dep = dep.split("(")[0].split(":")[0].strip()
            if dep:
                todo.append(dep)
    return seen


@pytest.mark.skipif(not shutil.which("dpkg-query"), reason="needs Debian's package database")
def test_the_image_carries_what_the_containers_run():
    """Every file a container uses (charon, each plugin the lab loads, ps and ip for the host
    checks, the protocol and service names) comes from a package the image installs."""
    needed = [charon.CHARON, "/etc/protocols", "/etc/services",
              *(f"/usr/lib/ipsec/plugins/libstrongswan-{p}.so" for p in charon.PLUGINS.split())]
    needed += [os.path.realpath(shutil.which(tool) or tool) for tool in ("ps", "ip")]
    shipped = _with_dependencies(images.PACKAGES)
    missing = {path: _owner(path) for path in needed if _owner(path) not in shipped}
    assert not missing, f"not in the image (file: package): {missing}"


def test_the_dockerfile_installs_the_same_packages():
    text = (images.Path(__file__).resolve().parent.parent / "docker" / "Dockerfile").read_text()
    assert "bookworm-slim" in text
    for package in images.PACKAGES:
        assert package in text


def _fake_image(directory, ident="0123456789ab"):
    (directory / f"{ident}.tar").write_bytes(b"x" * 10)
    (directory / f"{ident}.json").write_text(json.dumps({"tag": images.tag(ident), "built": "now"}))
    return ident


def test_list_and_find(tmp_path):
    assert images.list_images(tmp_path) == []
    assert images.list_images(tmp_path / "missing") == []
    ident = _fake_image(tmp_path)
    (tmp_path / "half.tar").write_bytes(b"")  # a tarball without its metadata is not an image
    found = images.list_images(tmp_path)
    assert [i.ident for i in found] == [ident]
    assert found[0].tag == f"ipsec-lab/strongswan:{ident}" and found[0].size == 10
    assert images.find(ident, tmp_path).tarball == tmp_path / f"{ident}.tar"
    assert images.find("ffffffffffff", tmp_path) is None


def test_build_reuses_an_image_with_the_same_tag(tmp_path, monkeypatch):
    _fake_image(tmp_path, images.image_id())

    def no(*a, **kw):
        raise AssertionError("must not run debootstrap again")
    monkeypatch.setattr(images.subprocess, "Popen", no)
    assert images.build(directory=tmp_path).ident == images.image_id()


@pytest.mark.parametrize("text, url", [
    ("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n", "http://mirror.example/debian"),
    ("deb http://mirror.example/debian bookworm main\n", "http://mirror.example/debian"),
    ("deb [signed-by=/k.gpg] http://m.example/d bookworm main\n", "http://m.example/d"),
    ("deb http://m.example/debian-security bookworm-security main\ndeb http://m.example/d bookworm main\n",
     "http://m.example/d"),
])
def test_the_mirror_is_the_one_apt_uses(tmp_path, monkeypatch, text, url):
    monkeypatch.delenv("LAB_DEBIAN_MIRROR", raising=False)
    f = tmp_path / "sources"
    f.write_text(text)
    assert images.debian_mirror((str(f),)) == url
    monkeypatch.setenv("LAB_DEBIAN_MIRROR", "http://other.example/debian")
    assert images.debian_mirror((str(f),)) == "http://other.example/debian"


def test_dockerd_is_private_to_the_run_and_leaves_the_network_alone():
    argv = containers.dockerd_argv("/tmp/lab")
    for flag in ("--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false",
                 "--ip-forward=false"):
        assert flag in argv
    assert all(v.startswith("/tmp/lab/docker/") for v in
               (argv[argv.index(o) + 1] for o in ("--data-root", "--exec-root", "--pidfile")))
    assert argv[argv.index("-H") + 1] == "unix:///tmp/lab/docker/docker.sock"
    snippet = containers.init_snippet("/tmp/lab")
    assert "mount -t tmpfs tmpfs /etc/docker" in snippet  # dockerd's key.json must not reach the host
    # containerd first (its own config, on guest tmpfs), dockerd pointed at it once it listens
    assert "containerd --config /tmp/lab/docker/containerd.toml" in snippet
    assert f"exec {' '.join(argv)} --containerd /tmp/lab/docker/containerd.sock > /tmp/lab/docker/dockerd.log 2>&1" \
        in snippet
    conf = containers.containerd_config("/tmp/lab")
    assert 'address = "/tmp/lab/docker/containerd.sock"' in conf and "io.containerd.grpc.v1.cri" in conf


def test_dockerd_runs_containers_with_crun_where_it_is_installed(monkeypatch):
    monkeypatch.setattr(containers.shutil, "which", lambda name: "/usr/bin/crun" if name == "crun" else None)
    argv = containers.dockerd_argv("/tmp/lab")
    assert argv[argv.index("--default-runtime") + 1] == "crun"
    assert argv[argv.index("--add-runtime") + 1] == "crun=/usr/bin/crun"
    monkeypatch.setattr(containers.shutil, "which", lambda name: None)
    assert "--default-runtime" not in containers.dockerd_argv("/tmp/lab")  # dockerd's own runc


def test_cli_has_the_provider_and_image_verbs(monkeypatch):
    monkeypatch.delenv("LAB_PROVIDER", raising=False)
    args = parser().parse_args(["verify", "t.yaml", "--provider", "docker"])
    assert args.provider == "docker"
    assert parser().parse_args(["verify", "t.yaml"]).provider == "netns"
    assert parser().parse_args(["image", "list"]).action == "list"
    with pytest.raises(SystemExit):
        parser().parse_args(["verify", "t.yaml", "--provider", "vm"])


def test_each_role_image_holds_strongswan_and_exactly_its_servers():
    assert images.packages_for(()) == images.PACKAGES
    be = images.packages_for(("nginx", "dovecot"))
    assert set(be) == set(images.PACKAGES) | {"nginx-light", "dovecot-imapd", "dovecot-pop3d"}
    assert images.packages_for(("dovecot", "nginx")) == be  # order does not change the image
    ids = {images.image_id(images.packages_for(d)) for d in [(), *images.ROLE_IMAGES.values()]}
    assert len(ids) == 4 and ids == images.current_ids()
    assert images.tag(daemons=("slapd", "krb5kdc")).startswith("ipsec-lab/strongswan-krb5kdc-slapd:")
    with pytest.raises(images.LabError, match="no image package known for daemon"):
        images.packages_for(("sendmail",))


def test_a_plan_gets_a_role_image_for_each_host_with_real_servers(monkeypatch, tmp_path):
    built = []

    def fake_build(on_progress=None, force=False, directory=None, daemons=()):
        ident = images.image_id(images.packages_for(daemons))
        built.append(tuple(daemons))
        return images.Image(ident, tmp_path / f"{ident}.tar", {"tag": images.tag(ident, daemons)})

    monkeypatch.setattr(images, "build", fake_build)
    plan = NS(hosts=[NS(name="fe", servers=None), NS(name="fw", servers=None),
                     NS(name="be", servers={"daemons": [{"name": "nginx"}, {"name": "dovecot"}]})])
    out = images.for_plan(plan, seed=False)
    assert out["hosts"] == {"be": images.tag(daemons=("dovecot", "nginx"))}
    assert out["tag"] == images.tag() and "seed" not in out
    assert set(out["tarballs"]) == {images.tag(), images.tag(daemons=("dovecot", "nginx"))}


def test_several_images_share_one_seeded_data_root_named_by_their_ids(tmp_path):
    a = images.Image("aaaaaaaaaaaa", tmp_path / "aaaaaaaaaaaa.tar", {})
    b = images.Image("bbbbbbbbbbbb", tmp_path / "bbbbbbbbbbbb.tar", {})
    assert images.seed_path(a) == tmp_path / "aaaaaaaaaaaa.dockerd.ext4"
    assert images.seed_path([a]) == images.seed_path(a)
    assert images.seed_path([a, b]) == images.seed_path([b, a]) != images.seed_path([a])


class _Container:
    """A docker SDK container that records what the provider asked of dockerd."""

    def __init__(self):
        self.kills: list[int] = []

    def kill(self, signal: int) -> None:
        self.kills.append(signal)


def test_signals_go_to_the_container_init_directly_not_through_dockerd():
    """node-crash: the kill is the failover's event; dockerd's 2 s round trip was counted in the outage."""
    import signal

    victim = subprocess.Popen(["sleep", "60"])
    container = _Container()
    proc = containers.ContainerProcess(container, victim.pid)
    proc.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=5) == -signal.SIGKILL
    assert container.kills == []
    term = subprocess.Popen(["sleep", "60"])
    proc = containers.ContainerProcess(container, term.pid)
    proc.send_signal(signal.SIGTERM)  # a graceful stop goes to docker-init too, which forwards it
    assert term.wait(timeout=5) == -signal.SIGTERM
    assert container.kills == []
    proc = containers.ContainerProcess(container, None)  # no PID known: through dockerd
    proc.send_signal(signal.SIGTERM)
    assert container.kills == [signal.SIGTERM]


UDP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  7: 00000000:01F4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0
"""


def _fake_proc(root, pids: dict[int, tuple[str, str]], udp: str = UDP):
    """A /proc with processes {pid: (pid namespace, comm)} and the first one's net/udp."""
    for pid, (ns, comm) in pids.items():
        (root / str(pid) / "ns").mkdir(parents=True)
        (root / str(pid) / "ns" / "pid").symlink_to(f"pid:[{ns}]")
        (root / str(pid) / "comm").write_text(comm + "\n")
        (root / str(pid) / "net").mkdir()
        (root / str(pid) / "net" / "udp").write_text(udp)
    (root / "self").mkdir()  # not a process: skipped
    return str(root)


def test_a_container_is_read_from_proc_its_pid_namespace_its_socket_and_udp_500(tmp_path):
    import socket

    proc = _fake_proc(tmp_path / "proc", {40: ("c1", "charon"), 41: ("c1", "nginx"), 42: ("c1", "nginx"),
                                          1: ("root", "init"), 50: ("c2", "sleep")})
    sock = str(tmp_path / "charon.vici")
    s = socket.socket(socket.AF_UNIX)
    s.bind(sock)
    try:
        got = containers.read_host(40, sock, proc)
    finally:
        s.close()
    assert got == {"charon_running": True, "vici_socket": True, "ike_listening": True, "processes": ["charon", "nginx"]}
    other = containers.read_host(50, str(tmp_path / "none.vici"), proc)  # another container, no charon
    assert other["processes"] == ["sleep"] and not other["charon_running"] and not other["vici_socket"]


def test_udp_500_counts_only_when_bound_there_and_unconnected():
    assert containers.ike_bound(UDP)
    assert not containers.ike_bound(UDP.replace(":01F4", ":1194"))  # another port
    assert not containers.ike_bound(UDP.replace(" 07 ", " 01 "))  # connected, not listening
    assert not containers.ike_bound("")


def test_xfrm_states_are_counted_from_the_executors_listing():
    listing = {"state": "src 10.0.0.1 dst 10.0.0.2\n\tproto esp spi 0x1\nsrc 10.0.0.2 dst 10.0.0.1\n\tproto esp\n"}
    assert containers.count_states(listing) == 2
    assert containers.count_states(None) == 0 and containers.count_states({"state": ""}) == 0


def test_dockerd_version_comes_from_its_server_header():
    assert containers.server_version("Docker/20.10.24+dfsg1 (linux)") == "20.10.24+dfsg1"
    assert containers.server_version("") is None


def test_containers_keep_docker_init_only_where_charon_or_real_servers_run():
    assert containers.lean_options({"name": "legacy", "charon": None, "servers": None})["init"] is False
    assert containers.lean_options({"name": "fe", "charon": {"conns": {}}, "servers": None})["init"] is True
    assert containers.lean_options({"name": "dc", "charon": None, "servers": {"daemons": [{"name": "slapd"}]}})["init"] is True
    lean = containers.lean_options({"name": "fw"})
    assert lean["security_opt"] == ["seccomp=unconfined"] and lean["log_config"] == {"type": "none"}


class _Named:
    def __init__(self, name):
        self.name = name


def test_in_a_throwaway_guest_the_containers_are_killed_and_listed_only_once_gone(tmp_path):
    """The guest's dockerd data-root dies with the guest: SIGKILL each container's init and wait."""
    import signal

    (tmp_path / "docker").mkdir()  # as the guest's init leaves it: dockerd started before the executor
    engine = containers.Engine(str(tmp_path), "r1")
    assert engine.throwaway
    inits = {h: subprocess.Popen(["sleep", "60"]) for h in ("fe", "be")}
    engine.containers = {h: _Named(f"lab-r1-{h}") for h in inits}
    assert engine.kill_all({h: p.pid for h, p in inits.items()}) == ["lab-r1-be", "lab-r1-fe"]
    assert all(p.wait(timeout=5) == -signal.SIGKILL for p in inits.values())
    assert not containers.Engine(str(tmp_path / "host"), "r2").throwaway  # dockerd of its own: docker rm
