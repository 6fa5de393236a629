"""Network namespaces, bridges and veths for one plan, built with as few processes as possible.

Runs inside the lab kernel. iproute2's batch mode creates every namespace and link (one process
each step), then each host's addresses and routes are set over netlink from this process
(lab.guest.rtnl): in the guest a process start costs far more than the netlink messages.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from contextlib import contextmanager

from lab.guest import rtnl

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_setns_lock = threading.Lock()


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def inside(ns: str):
    """Run the body with this thread in namespace `ns`; sockets made there stay there."""
    with _setns_lock:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            _setns(target)
            yield
        finally:
            _setns(home)
            os.close(target)
            os.close(home)


CLONE_NEWNS = 0x00020000
MS_REC, MS_SLAVE = 0x4000, 1 << 19


def spawn_private_run(ns: str, argv: list[str], **popen: object) -> subprocess.Popen:
    """Start a daemon in namespace `ns` with a tmpfs of its own on /run (pid files of several
    charons must not clash). A throwaway thread enters the namespace, unshares its mount
    namespace (a thread may: it gets its own fs_struct) and mounts the tmpfs; the child it
    spawns inherits both. One process image, where `ip netns exec NS sh -c 'mount ...; exec'`
    took four; and no preexec_fn, which would force a full fork of this process (vfork is far
    cheaper in the guest)."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            if _libc.unshare(CLONE_NEWNS) != 0 or \
                    _libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None) != 0 or \
                    _libc.mount(b"tmpfs", b"/run", b"tmpfs", 0, None) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            box["proc"] = subprocess.Popen(argv, **popen)
        except BaseException as exc:  # noqa: BLE001  raised in the caller's thread below
            box["error"] = exc

    t = threading.Thread(target=work, name=f"spawn-{ns}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["proc"]


def ip(ns: str, *args: str) -> list[str]:
    """`ip -n NS ARGS...`: iproute2 acting on namespace `ns`."""
    return ["ip", "-n", ns, *args]


def run_in(ns: str, *argv: str) -> list[str]:
    """ARGV run as a process inside namespace `ns` (`ip netns exec`)."""
    return ["ip", "netns", "exec", ns, *argv]


def write_sysctl(ns: str, key: str, value: str) -> None:
    """/proc/sys/net is resolved per opening thread, so this writes the namespace's copy."""
    with inside(ns):
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)


def ip_batch(commands: list[str], ns: str | None = None) -> None:
    if not commands:
        return
    argv = ip(ns, "-batch", "-") if ns else ["ip", "-batch", "-"]
    res = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True)
    if res.returncode != 0:
        where = f" in {ns}" if ns else ""
        raise RuntimeError(f"ip -batch{where} failed: {res.stderr.strip()}")


def _one_address(ts: str) -> bool:
    net = ts.partition("[")[0]
    return "/" not in net or net.endswith("/32")


def queue_while_negotiating(host: dict) -> bool:
    """May this host's trapped packets wait in the kernel while IKE runs? Only if every trap
    policy leads to one peer. The kernel keeps one queue per policy and re-tries only its
    first packet: behind a packet for a peer that never answers, the packets for peers whose
    SAs are up would wait until the queue is purged (seen: an all-traffic rule to four peers,
    three flows dropped). Such hosts keep dropping (and TCP retries)."""
    conns = (host.get("charon") or {}).get("conns") or {}
    for conn in conns.values():
        for child in (conn.get("children") or {}).values():
            if child.get("start_action") != "trap" or child.get("mode") in ("pass", "drop"):
                continue
            remotes = child.get("remote_ts") or []
            if not remotes or not all(_one_address(ts) for ts in remotes):
                return False
    return bool(conns)


def create(plan: dict, attach: dict[str, int] | None = None, on_namespaces=None) -> None:
    """`attach` maps namespace names to PIDs (containers) whose namespace gets that name;
    `on_namespaces` is called once every namespace exists, before links and addresses."""
    sw = plan.switch_ns
    names = [sw] + [h["ns"] for h in plan.hosts]
    attach = attach or {}
    ip_batch([f"netns attach {n} {attach[n]}" if n in attach else f"netns add {n}" for n in names])
    for n in names:
        # No IPv6 chatter (router solicitations, DAD) in the captures.
        write_sysctl(n, "net.ipv6.conf.all.disable_ipv6", "1")
        write_sysctl(n, "net.ipv6.conf.default.disable_ipv6", "1")
    for h in plan.hosts:
        write_sysctl(h["ns"], "net.ipv4.ping_group_range", "0 2147483647")  # ICMP probes as ping sockets
        if plan.probes and queue_while_negotiating(h):
            # A trapped flow's packets wait in the kernel while IKE runs and leave through the
            # SA the moment it is up, instead of being dropped until TCP's next SYN retry (1 s,
            # then 3 s). They are still the probe's own packets. Failover runs keep the default:
            # there the timing of dropped requests is the behaviour measured.
            write_sysctl(h["ns"], "net.core.xfrm_larval_drop", "0")
        if h["forward"]:
            write_sysctl(h["ns"], "net.ipv4.ip_forward", "1")
    if on_namespaces:
        on_namespaces()
    links = []
    for net in plan.networks:
        links.append(f"link add {net['bridge']} netns {sw} type bridge stp_state 0 forward_delay 0")
    for h in plan.hosts:
        for i in h["interfaces"]:
            links.append(f"link add {i['peer']} netns {sw} type veth peer name {i['ifname']} netns {h['ns']}")
    ip_batch(links)
    switch = [f"link set {net['bridge']} up" for net in plan.networks]
    for h in plan.hosts:
        for i in h["interfaces"]:
            switch += [f"link set {i['peer']} master {i['bridge']}", f"link set {i['peer']} up"]
    ip_batch(switch, ns=sw)
    # Each host's addresses and routes over netlink from this thread: no process per host.
    for h in plan.hosts:
        rtnl.configure(h["ns"], h, inside)


def existing(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix))
    except FileNotFoundError:
        return []


def destroy(names: list[str]) -> None:
    """Delete namespaces; missing ones are fine (teardown must be idempotent)."""
    names = [n for n in names if os.path.exists(f"/run/netns/{n}")]
    if names:
        subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names),
                       capture_output=True, text=True)
