"""The guest runtime's parts, each against a scripted charon (VICI) or recorded commands."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from types import SimpleNamespace

import pytest
from fakes import ScriptedVici

from lab.guest import charon, firewall, netns, softsa, xfrm


@pytest.fixture
def daemon(tmp_path):
    """A Charon whose daemon is a scripted VICI server at its socket path."""
    c = charon.Charon("fe", "lab-t-fe", str(tmp_path))
    (tmp_path / "fe").mkdir()
    server = ScriptedVici(c.socket_path)
    c.connect(time.monotonic() + 5)
    yield c, server
    c.stop()
    server.close()


def test_start_writes_its_own_conf_and_runs_charon_in_its_namespace(kernel, tmp_path):
    c = charon.Charon("fe", "lab-t-fe", str(tmp_path))
    c.settings = {"retransmit_tries": "2"}
    c.start()
    call = kernel.calls[-1]  # charon itself, one process, started in its namespace with a private /run
    assert (call.ns, call.argv) == ("lab-t-fe", [charon.CHARON])
    assert all(call.popen[k] == subprocess.DEVNULL for k in ("stdin", "stdout", "stderr"))
    conf = (tmp_path / "fe" / "strongswan.conf").read_text()
    assert call.env["STRONGSWAN_CONF"] == str(tmp_path / "fe" / "strongswan.conf")
    assert f"socket = unix://{c.socket_path}" in conf and "retransmit_tries = 2" in conf
    assert f"load = {charon.PLUGINS}" in conf and f"path = {c.log_path}" in conf
    c.connect(time.monotonic() + 5)  # the recorder serves VICI where the conf says
    assert c.list_sas() == []
    c.stop()
    assert c.proc.signals == [signal.SIGTERM]
    c.reap(grace=1)


def test_connect_gives_up_with_the_socket_path(tmp_path):
    c = charon.Charon("fe", "lab-t-fe", str(tmp_path))
    with pytest.raises(RuntimeError, match=f"charon on fe: no VICI socket at {c.socket_path} after waiting"):
        c.connect(time.monotonic() + 0.2)


def test_connect_says_when_the_daemon_exited(kernel, tmp_path):
    c = charon.Charon("fe", "lab-t-fe", str(tmp_path))
    c.start()
    c.proc.returncode = 1
    with pytest.raises(RuntimeError, match="charon on fe exited with 1; see .*charon.log"):
        c.connect(time.monotonic() + 5)


def test_load_with_a_psk_then_each_connection(daemon):
    c, server = daemon
    c.load({"a": {"version": "2"}, "b": {"version": "1"}}, "k3y", None)
    assert server.requests == [("load-shared", {"type": "IKE", "data": "k3y"}),
                               ("load-conn", {"a": {"version": "2"}}), ("load-conn", {"b": {"version": "1"}})]


def test_a_refused_connection_names_host_and_connection(daemon):
    c, server = daemon
    server.refuse["load-conn:b"] = "unknown proposal"
    with pytest.raises(RuntimeError) as err:
        c.load({"a": {}, "b": {}}, "k3y")
    assert str(err.value) == "charon on fe refused connection 'b': Command failed: unknown proposal"


def test_certificates_are_loaded_in_order_and_a_refusal_never_shows_the_key(daemon):
    c, server = daemon
    creds = {"ca": "CA-PEM", "crl": "CRL-PEM", "cert": "CERT-PEM", "key": "KEY-PEM"}
    c.load({"a": {}}, "unused", creds)
    assert [(cmd, m.get("type"), m.get("flag")) for cmd, m in server.requests] == [
        ("load-cert", "X509", "CA"), ("load-cert", "X509_CRL", "NONE"), ("load-cert", "X509", "NONE"),
        ("load-key", "ECDSA", None), ("load-conn", None, None)]
    assert not server.commands("load-shared")
    server.refuse["load-key"] = "parsing failed"
    with pytest.raises(RuntimeError) as err:
        c.load_credentials(creds)
    assert str(err.value) == "charon on fe refused its private key: Command failed: parsing failed"
    assert "KEY-PEM" not in str(err.value)


def test_lists_terminate_and_events(daemon):
    c, server = daemon
    server.sas = [{"x": {"uniqueid": "3", "state": "ESTABLISHED"}}, {"y": {"uniqueid": "4"}}]
    server.policies = [{"fe-be": {"mode": "TRAP"}}]
    assert c.list_sas()[0] == {"x": {"uniqueid": "3", "state": "ESTABLISHED"}}
    assert c.list_policies() == [{"fe-be": {"mode": "TRAP"}}]
    assert server.commands("list-policies") == [{"trap": "yes", "pass": "yes", "drop": "yes"}]
    assert c.terminate_all(500) == (2, 0) and server.sas == []
    deadline = time.monotonic() + 5
    while not server._listeners and time.monotonic() < deadline:
        time.sleep(0.02)
    server.emit("child-updown", {"up": "yes", "x": {"remote-host": "10.0.0.2"}})
    while not c.events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert c.events[0]["event"] == "child-updown" and c.events[0]["data"]["x"]["remote-host"] == "10.0.0.2"


# ---- the soft SA agent (Windows' fallback to clear) -------------------------------------------

HINT = {"seconds": 0.2, "children": [{"rule": "http", "local_ts": ["10.0.0.1/32[tcp]"], "remote_suffix": "[tcp/80]",
                                      "priority": 2900, "remote_prefixes": ["10.0.0.0/24"]}]}


def _connecting(responder_spi: str = softsa.NO_ANSWER) -> list[dict]:
    return [{"rule-http": {"uniqueid": "9", "state": "CONNECTING", "initiator": "yes",
                           "remote-host": "10.0.0.2", "responder-spi": responder_spi}}]


def _wait(pred, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.02)
    return pred()


def test_silence_falls_back_to_clear_for_that_peer_only(daemon):
    c, server = daemon
    server.sas = _connecting()
    agent = softsa.SoftSaAgent(c, {"rule-http": HINT})
    agent.start()
    try:
        assert _wait(lambda: agent.installed)
    finally:
        agent.stop()
    entry = agent.installed[0]
    assert (entry["conn"], entry["peer"], entry["shunt"]) == ("rule-http", "10.0.0.2", "soft-1")
    assert entry["after"] >= HINT["seconds"] and entry["remote_ts"] == ["10.0.0.2/32[tcp/80]"]
    [shunt] = server.commands("load-conn")
    child = shunt["soft-1"]["children"]["soft-http"]
    assert child == {"mode": "pass", "local_ts": ["10.0.0.1/32[tcp]"], "remote_ts": ["10.0.0.2/32[tcp/80]"],
                     "start_action": "trap", "priority": "2900"}
    assert server.commands("terminate") == [{"ike-id": "9", "force": "yes", "timeout": "-1"}]


def test_a_peer_that_answered_never_falls_back(daemon):
    c, server = daemon
    server.sas = _connecting(responder_spi="1234567890abcdef")
    agent = softsa.SoftSaAgent(c, {"rule-http": HINT})
    agent.start()
    time.sleep(HINT["seconds"] + 0.4)
    agent.stop()
    assert agent.installed == [] and not server.commands("load-conn")


def test_connections_without_a_hint_and_responders_are_left_alone(daemon):
    c, server = daemon
    server.sas = [{"other": {"uniqueid": "1", "state": "CONNECTING", "initiator": "yes"}},
                  {"rule-http": {"uniqueid": "2", "state": "CONNECTING", "initiator": "no"}}]
    agent = softsa.SoftSaAgent(c, {"rule-http": HINT})
    agent.start()
    time.sleep(HINT["seconds"] + 0.4)
    agent.stop()
    assert agent.installed == []


def test_the_agent_records_a_daemon_that_went_away(daemon):
    c, server = daemon
    agent = softsa.SoftSaAgent(c, {"rule-http": HINT})
    agent.start()
    server.close()
    assert _wait(lambda: agent.installed)
    agent.stop()
    assert "error" in agent.installed[0]


# ---- netns, firewall, xfrm: the commands they give the kernel ---------------------------------

def test_netns_create_builds_switch_links_and_hosts(kernel):
    plan = SimpleNamespace(switch_ns="sw", networks=[{"name": "dmz", "bridge": "br0"}], probes=[], hosts=[
        {"name": "fe", "ns": "ns-fe", "forward": True, "routes": [{"dst": "default", "via": "10.0.0.1"}],
         "interfaces": [{"ifname": "eth0", "peer": "h0i0", "bridge": "br0", "address": "10.0.0.2/24"}],
         "vips": [{"address": "10.0.0.9/24", "ifname": "eth0"}]}])
    netns.create(plan, attach={"ns-fe": 4242})
    batches = [(c.argv, c.input) for c in kernel.calls if "-batch" in c.argv]
    assert batches[0] == (["ip", "-batch", "-"], "netns add sw\nnetns attach ns-fe 4242\n")
    assert batches[1][1] == ("link add br0 netns sw type bridge stp_state 0 forward_delay 0\n"
                             "link add h0i0 netns sw type veth peer name eth0 netns ns-fe\n")
    assert batches[2] == (["ip", "-n", "sw", "-batch", "-"],
                          "link set br0 up\nlink set h0i0 master br0\nlink set h0i0 up\n")
    sysctls = [c.argv[-1] for c in kernel.calls if c.argv[0] == "sysctl" and c.argv[2] == "ns-fe"]
    assert "net.ipv4.ip_forward=1" in sysctls and "net.ipv6.conf.all.disable_ipv6=1" in sysctls
    host = next(c for c in kernel.calls if c.argv[:3] == ["ip", "-n", "ns-fe"])  # netlink, recorded as ip's
    assert host.input == ("link set lo up\naddr add 10.0.0.2/24 dev eth0\nlink set eth0 up\n"
                          "addr add 10.0.0.9/24 dev eth0\nroute add default via 10.0.0.1\n")


def test_a_hosts_netlink_requests_carry_what_ip_would_send():
    import struct

    from lab.guest import rtnl

    host = {"name": "fe", "interfaces": [{"ifname": "eth0", "address": "10.0.0.2/24"}], "vips": [],
            "routes": [{"dst": "default", "via": "10.0.0.1"}], "firewall": {"addresses": [
                {"address": "10.9.0.2/32", "ifname": "eth0"}]}}
    reqs = rtnl.host_requests(host, {"eth0": 7}.__getitem__)
    assert [what for what, _ in reqs] == ["link set lo up", "addr add 10.0.0.2/24 dev eth0", "link set eth0 up",
                                          "addr add 10.9.0.2/32 dev eth0", "route add default via 10.0.0.1"]
    length, kind, flags = struct.unpack_from("=IHH", reqs[1][1])
    assert (length, kind) == (len(reqs[1][1]), rtnl.RTM_NEWADDR) and flags & rtnl.NLM_F_ACK
    family, prefixlen, _, _, index = struct.unpack_from("=BBBBI", reqs[1][1], 16)
    assert (family, prefixlen, index) == (2, 24, 7) and bytes([10, 0, 0, 2]) in reqs[1][1]
    assert reqs[0][1].endswith(b"lo\0\0") and bytes([10, 0, 0, 1]) in reqs[-1][1]
    with pytest.raises(ValueError, match="only a default route"):
        rtnl.host_requests(dict(host, routes=[{"dst": "10.1.0.0/16", "via": "10.0.0.1"}]), lambda i: 1)
    refused = struct.pack("=IHHIIi", 36, rtnl.NLMSG_ERROR, 0, 0, 0, -17) + b"\0" * 16
    assert rtnl._errno(refused) == 17 and rtnl._errno(struct.pack("=IHHIIi", 20, rtnl.NLMSG_ERROR, 0, 0, 0, 0)) == 0


def test_netns_failures_name_the_namespace(kernel):
    kernel.answer(r"^ip -n sw -batch", "", 1)
    with pytest.raises(RuntimeError, match="ip -batch in sw failed"):
        netns.ip_batch(["link set br0 up"], ns="sw")
    netns.ip_batch([])  # nothing to do: no process at all
    assert len(kernel.calls) == 1


FW = {"host": "fw", "commands": ["qdisc add dev eth0 clsact"], "devices": ["eth0"]}


def test_firewall_applies_in_one_batch_and_reads_counters(kernel):
    firewall.apply("ns-fw", FW)
    assert kernel.calls[0].argv == ["ip", "netns", "exec", "ns-fw", "tc", "-batch", "-"]
    assert kernel.calls[0].input == "qdisc add dev eth0 clsact\n"
    ingress = [{"pref": 10, "kind": "u32"},  # a chain header: no actions
               {"pref": 10, "options": {"actions": [{"stats": {"packets": 4, "bytes": 240}}]}}]
    egress = [{"pref": 20, "options": {"actions": [{"stats": {"packets": 1, "bytes": 60}}]}}]
    kernel.answer(r"tc -s -j -batch", json.dumps(ingress) + "\n" + json.dumps(egress) + "\n")
    assert firewall.counters("ns-fw", FW) == [
        {"dev": "eth0", "hook": "ingress", "pref": 10, "packets": 4, "bytes": 240},
        {"dev": "eth0", "hook": "egress", "pref": 20, "packets": 1, "bytes": 60}]
    assert kernel.calls[-1].input == "filter show dev eth0 ingress\nfilter show dev eth0 egress\n"


def test_firewall_errors_say_which_host(kernel):
    kernel.answer(r"tc -batch", "", 2)
    with pytest.raises(RuntimeError, match="tc filters on fw failed"):
        firewall.apply("ns-fw", FW)
    kernel.answer(r"tc -s -j", "", 2)
    with pytest.raises(RuntimeError, match="tc counters on fw"):
        firewall.counters("ns-fw", FW)


POLICIES = """src 10.10.2.20/32 dst 10.10.1.10/32 proto tcp sport 80 dev eth0
\tdir in priority 2900 ptype main
\ttmpl src 10.10.1.10 dst 10.10.2.20
\t\tproto esp reqid 1 mode transport
src 10.10.2.20/32 dst 10.10.1.10/32 proto tcp
\tdir in priority 3100 ptype main
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 2 mode transport
"""


def test_inbound_passthrough_makes_only_the_chosen_templates_optional(kernel):
    kernel.answer(r"xfrm policy list dir in", POLICIES)
    assert [p["priority"] for p in xfrm.inbound_policies("ns-be")] == [2900, 3100]
    changed = xfrm.relax_inbound("ns-be", [2900])
    assert changed == ["src 10.10.2.20/32 dst 10.10.1.10/32 proto tcp sport 80 dev eth0"]
    assert kernel.calls[-1].argv == ["ip", "-n", "ns-be", "-batch", "-"]
    assert kernel.calls[-1].input == ("xfrm policy update src 10.10.2.20/32 dst 10.10.1.10/32 proto tcp sport 80 "
                                      "dir in priority 2900 tmpl proto esp reqid 1 mode transport level use\n")
    assert xfrm.relax_inbound("ns-be", [1]) == []


def test_inbound_passthrough_failure_is_an_error(kernel):
    kernel.answer(r"xfrm policy list dir in", POLICIES)
    kernel.answer(r"-batch", "", 1)
    with pytest.raises(RuntimeError, match="relaxing inbound policies in ns-be failed"):
        xfrm.relax_inbound("ns-be", [3100])


def _trap_host(*remotes: str, start_action: str = "trap", mode: str = "transport") -> dict:
    child = {"start_action": start_action, "mode": mode, "remote_ts": list(remotes)}
    return {"charon": {"conns": {"peer-x": {"children": {"c": child}}}}}


def test_trapped_packets_queue_only_where_every_trap_leads_to_one_peer():
    assert netns.queue_while_negotiating(_trap_host("10.0.0.2/32[tcp/80]", "10.0.0.3"))
    assert not netns.queue_while_negotiating(_trap_host("10.0.0.0/24[tcp]"))  # one queue, many peers
    assert not netns.queue_while_negotiating(_trap_host())  # any address
    assert netns.queue_while_negotiating({**_trap_host("10.0.0.2"), "charon": {"conns": {
        **_trap_host("10.0.0.2")["charon"]["conns"],
        "bypass": {"children": {"p": {"start_action": "trap", "mode": "pass", "remote_ts": ["0.0.0.0/0"]}}},
        "resp": {"children": {"r": {"start_action": "none", "remote_ts": ["0.0.0.0/0"]}}}}}})
    assert not netns.queue_while_negotiating({"charon": None})  # no IPsec: nothing trapped


def test_netns_create_lets_packets_wait_for_ike_only_on_probe_runs(kernel):
    host = {"name": "fe", "ns": "ns-fe", "forward": False, "routes": [], "interfaces": [],
            **_trap_host("10.0.0.2/32[tcp/80]")}
    plan = SimpleNamespace(switch_ns="sw", networks=[], hosts=[host], probes=[])

    def larval():
        return [c.argv[-1] for c in kernel.calls if c.argv[0] == "sysctl" and "xfrm_larval_drop" in c.argv[-1]]
    netns.create(SimpleNamespace(**{**vars(plan), "probes": [{"id": "p1"}]}))
    assert larval() == ["net.core.xfrm_larval_drop=0"]
    kernel.calls.clear()
    netns.create(plan)  # a failover run: dropped requests are what it measures
    assert larval() == []


def test_spawn_private_run_raises_in_the_caller_when_there_is_no_namespace():
    with pytest.raises(FileNotFoundError, match="/run/netns/lab-no-such-namespace"):
        netns.spawn_private_run("lab-no-such-namespace", ["true"])


def test_boot_marks_in_the_order_they_happened():
    from lab.guest.executor import boot_marks
    marks = boot_marks(" kernel=0.47 mounts=0.64 modules=1.00 crypto=1.29\n", 1.72, 1.73)
    assert list(marks) == ["kernel", "mounts", "modules", "crypto", "python", "kernel_ready"]
    assert marks["python"] == 1.72
    # python done before the modules: it waited for them
    assert list(boot_marks("kernel=0.5 mounts=0.6 modules=1.4 crypto=1.6", 1.2, 1.61)) == \
        ["kernel", "mounts", "python", "modules", "crypto", "kernel_ready"]


def test_the_executor_waits_for_the_guests_kernel_then_says_booted(tmp_path, monkeypatch, capsys):
    import threading

    from lab.guest.executor import wait_for_kernel
    ready = tmp_path / "ready"
    monkeypatch.setenv("LAB_KERNEL_READY", str(ready))
    monkeypatch.setenv("LAB_BOOT", " kernel=0.4")
    t = threading.Timer(0.2, lambda: ready.write_text(" kernel=0.4 modules=0.9\n"))
    t.start()
    assert wait_for_kernel(timeout=5) == " kernel=0.4 modules=0.9\n"
    assert capsys.readouterr().out.startswith("@@guest booted ")


def _newsa(key: bytes) -> bytes:
    """A kernel's XFRM_MSG_NEWSA for an ESP transport SA with AES-GCM and this key."""
    import socket
    import struct

    info = bytearray(xfrm.USERSA_INFO)
    info[0:4], info[16:20] = socket.inet_aton("10.0.0.2"), socket.inet_aton("10.0.0.1")  # selector
    struct.pack_into(">HHHHHBBB", info, 32, 80, 0xffff, 0, 0, 2, 32, 32, 6)
    info[56:60], info[80:84] = socket.inet_aton("10.0.0.2"), socket.inet_aton("10.0.0.1")
    struct.pack_into(">I", info, 72, 0xc60ab6f8)
    info[76] = 50
    struct.pack_into("=QQ", info, 160, 293, 3)
    struct.pack_into("=IHB", info, 208, 1, 2, 0)  # reqid, family AF_INET, mode transport
    aead = b"rfc4106(gcm(aes))".ljust(64, b"\0") + struct.pack("=II", len(key) * 8, 128) + key
    attr = struct.pack("=HH", 4 + len(aead), 18) + aead
    attr += b"\0" * (-len(attr) % 4)
    body = bytes(info) + attr
    return struct.pack("=IHHII", 16 + len(body), xfrm.XFRM_MSG_NEWSA, 2, 1, 0) + body


def test_an_sa_dumped_over_netlink_reads_like_ip_without_its_key():
    import struct

    key = bytes(range(0xa0, 0xa0 + 36))
    done = struct.pack("=IHHIIi", 20, xfrm.NLMSG_DONE, 2, 1, 0, 0)
    described, finished = xfrm.parse_dump([_newsa(key) + done])
    assert finished and described == [
        "src 10.0.0.1 dst 10.0.0.2\n\tproto esp spi 0xc60ab6f8 reqid 1 mode transport\n"
        "\taead rfc4106(gcm(aes))\n\tsel src 10.0.0.1/32 dst 10.0.0.2/32 proto tcp dport 80\n"
        "\tlifetime current:\n\t  293(bytes), 3(packets)\n"]
    assert key.hex() not in described[0] and xfrm.parse_dump([_newsa(key)])[1] is False  # more to come
    error = struct.pack("=IHHIIi", 20, xfrm.NLMSG_ERROR, 0, 1, 0, -1)
    with pytest.raises(OSError):
        xfrm.parse_dump([error])


def test_cpu_per_step_is_counted_by_whom_and_never_negative():
    import os

    from lab.guest import cpu

    before = cpu.sample([os.getpid()])
    sum(i * i for i in range(200000))  # some CPU of this process
    after = cpu.sample([os.getpid(), 2 ** 22 + 1])  # a process that is gone counts nothing
    used = cpu.spent(before, after)
    assert set(used) == {"busy", "charons", "executor", "processes"} and min(used.values()) >= 0
    assert cpu.spent(after, before)["executor"] == 0.0


def test_openssl_legacy_provider_only_where_an_ike_proposal_needs_it():
    assert charon.legacy_needed({"peer-be": {"proposals": ["aes256-sha256-modp2048", "3des-sha1-modp1024"]}}) == "no"
    assert charon.legacy_needed({"peer-be": {"proposals": ["des-md5-modp768"]}, "peer-any": {}}) == "yes"
    assert charon.legacy_needed({}) == "yes"  # nothing known: the daemon's own default
    assert "load_legacy = yes" in charon.render_conf("/s", "/l")
    assert "load_legacy = no" in charon.render_conf("/s", "/l", {"load_legacy": "no"})


def test_a_vip_leaves_and_a_link_goes_down_as_ip_would_ask():
    import struct

    from lab.guest import rtnl

    what, msg = rtnl.del_address("10.10.2.20/24", "eth1", 5)
    assert what == "addr del 10.10.2.20/24 dev eth1"
    length, kind, flags = struct.unpack_from("=IHH", msg)
    assert (length, kind) == (len(msg), rtnl.RTM_DELADDR) and not flags & rtnl.NLM_F_CREATE
    assert struct.unpack_from("=BBBBI", msg, 16) == (2, 24, 0, 0, 5) and bytes([10, 10, 2, 20]) in msg
    what, msg = rtnl.link_down("eth1")
    family, _, index, flags, change = struct.unpack_from("=BxHiII", msg, 16)
    assert what == "link set eth1 down" and (flags, change) == (0, rtnl.IFF_UP) and msg.endswith(b"eth1\0\0\0\0")


def test_the_gratuitous_arp_is_what_arping_u_sends():
    """Read back by scapy, an independent parser: an ARP request for the VIP from the VIP."""
    from scapy.layers.l2 import ARP, Ether

    from lab.guest.failover import gratuitous_arp

    mac = bytes.fromhex("02aabbccdd01")
    frame = Ether(gratuitous_arp(mac, "10.10.2.20"))
    assert frame.dst == "ff:ff:ff:ff:ff:ff" and frame.src == "02:aa:bb:cc:dd:01" and frame.type == 0x0806
    arp = frame[ARP]
    assert (arp.op, arp.psrc, arp.pdst, arp.hwsrc) == (1, "10.10.2.20", "10.10.2.20", "02:aa:bb:cc:dd:01")
