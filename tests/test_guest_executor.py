"""The executor, whole, without root: a real plan, real sockets on loopback, recorded commands,
scripted charons (tests/fakes.py). What it must do with them: bring every host up, load exactly
the plan's connections, send every probe and record its answer, collect what the daemons say,
tear everything down, and never write the key."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from fakes import child_sa, loopback_plan

from lab.compile.plan import build_plan
from lab.contract import Plan
from lab.guest import executor
from lab.model.load import load_topology

ROOT = Path(__file__).resolve().parent.parent
PSK = "test-psk-never-written-9f3a"


def plan_for(name: str, outdir: Path, run_id: str = "t1") -> Plan:
    topo = load_topology(str(ROOT / "topologies" / f"{name}.yaml"))
    return loopback_plan(build_plan(topo, run_id, str(outdir)))


def execute(plan: Plan, tmp_path: Path, secrets: dict | None = None) -> tuple[int, dict]:
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_json()))
    (tmp_path / "secrets.json").write_text(json.dumps({"psk": PSK, **(secrets or {})}))
    # A short work folder, as the guest's /tmp/lab: VICI socket paths hold a host name of up to
    # 63 characters and must stay within AF_UNIX's 108 bytes.
    with tempfile.TemporaryDirectory(prefix="lab") as work:
        code = executor.main([str(tmp_path / "plan.json"), str(tmp_path / "secrets.json"), work])
    assert not (tmp_path / "secrets.json").exists(), "the secrets file must be gone once read"
    return code, json.loads((Path(plan.outdir) / "results.json").read_text())


XFRM_LISTING = "src 127.10.1.10 dst 127.10.2.20\n\tproto esp spi 0xc60ab6f8 reqid 1 mode transport\n"


@pytest.fixture
def fe_be(kernel, tmp_path, capsys):
    plan = plan_for("exchange-fe-be-http", tmp_path / "out")
    sa = child_sa("fe-be-http", "127.10.1.10", "127.10.2.20", "c60ab6f8", "cbc095cf",
                  ["127.10.1.10/32[tcp]"], ["127.10.2.20/32[tcp/http]"])
    fe_ns = next(h["ns"] for h in plan.hosts if h["name"] == "fe")
    kernel.sas[fe_ns] = [{"rule-fe-be-http": {"uniqueid": "1", "state": "ESTABLISHED",
                                                    "local-host": "127.10.1.10", "remote-host": "127.10.2.20",
                                                    "child-sas": {"fe-be-http-1": sa}}}]
    kernel.xfrm_states[fe_ns] = XFRM_LISTING  # one netlink dump per host, no process
    code, results = execute(plan, tmp_path)
    kernel.output = capsys.readouterr().out
    return plan, code, results, kernel


def test_every_probe_is_sent_and_answered(fe_be):
    plan, code, results, kernel = fe_be
    assert code == 0 and results["errors"] == []
    assert [o["id"] for o in results["probes"]] == [p["id"] for p in plan.probes]
    assert all(o["delivered"] and o["sport"] and o["error"] is None for o in results["probes"])
    heard = {(r["host"], r["marker"]) for r in results["received"]}
    assert heard == {(p["dst"], p["marker"]) for p in plan.probes}
    assert set(results["timings"]) >= {"bring_up", "probes", "collect", "teardown"}
    # the guest's CPU per step and phase, by whom (lab.guest.cpu)
    assert set(results["cpu_steps"]) >= set(results["bring_up_steps"]) | set(results["timings"])
    out = kernel.output
    assert executor.PROGRESS + '{"phase": "done"' in out and '"status": 0' in out


def test_each_charon_gets_exactly_its_connections_and_the_key(fe_be):
    plan, _, _, kernel = fe_be
    ipsec = {h["ns"]: h for h in plan.hosts if h["charon"] is not None}
    assert set(kernel.charons) == set(ipsec)
    for ns, server in kernel.charons.items():
        loaded = {name: conn for m in server.commands("load-conn") for name, conn in m.items()}
        assert loaded == json.loads(json.dumps(ipsec[ns]["charon"]["conns"]))  # as VICI carries it
        assert server.commands("load-shared") == [{"type": "IKE", "data": PSK}]


def test_what_the_daemons_said_is_collected_without_the_key(fe_be, tmp_path):
    plan, _, results, kernel = fe_be
    assert results["sas"]["fe"][0]["rule-fe-be-http"]["child-sas"]["fe-be-http-1"]["spi-in"] == "c60ab6f8"
    assert results["sas"]["be"] == [] and set(results["policies"]) == {"fe", "be"}
    assert set(results["xfrm"]) == {h["name"] for h in plan.hosts}
    assert results["xfrm"]["fw"] is None and "XfrmInError" in results["xfrm"]["fe"]["stat"]
    assert results["xfrm"]["fe"]["state"] == XFRM_LISTING
    fe_ns = next(h["ns"] for h in plan.hosts if h["name"] == "fe")
    assert [c.ns for c in kernel.calls if c.argv[:2] == ["netlink", "xfrm-getsa-dump"]] == [
        h["ns"] for h in plan.hosts if h["charon"] is not None]  # IPsec hosts only, no `ip` process
    assert not [c for c in kernel.calls if c.argv[:3] == ["ip", "-n", fe_ns] and "xfrm" in (c.input or "")]
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert PSK.encode() not in written


def test_everything_is_brought_up_and_torn_down(fe_be):
    plan, _, results, kernel = fe_be
    names = [plan.switch_ns] + [h["ns"] for h in plan.hosts]
    add = next(c for c in kernel.calls if c.argv[:2] == ["ip", "-batch"] and "netns add" in (c.input or ""))
    assert add.input.split("\n")[:-1] == [f"netns add {n}" for n in names]
    captures = kernel.commands("tcpdump")
    assert [c.argv[c.argv.index("-i") + 1] for c in captures] == [n["bridge"] for n in plan.networks]
    assert results["namespaces_left"] == []
    for server in kernel.charons.values():  # each daemon was stopped (SIGTERM), then reaped
        assert server._closed


def test_a_refused_connection_is_an_error_and_still_tears_down(kernel, tmp_path):
    plan = plan_for("exchange-fe-be-http", tmp_path / "out")
    kernel.refuse["load-conn:peer-be"] = "invalid traffic selector"
    code, results = execute(plan, tmp_path)
    assert code == 1
    assert results["errors"] == ["RuntimeError: charon on fe refused connection 'peer-be': "
                                 "Command failed: invalid traffic selector"]
    assert "teardown" in results["timings"] and results["namespaces_left"] == []


def _loopback_ready(name: str) -> bool:
    """Topologies whose probes can all run on loopback: unicast TCP/UDP, lab listeners only."""
    topo = load_topology(str(ROOT / "topologies" / f"{name}.yaml"))
    return bool(topo.expectations) and all(
        e.via == "unicast" and e.service.protocol != "icmp" for e in topo.expectations) \
        and not any(h.servers for h in topo.hosts if hasattr(h, "servers"))


SHIPPED = sorted(p.stem for p in (ROOT / "topologies").glob("*.yaml"))


@pytest.mark.parametrize("name", [n for n in SHIPPED if _loopback_ready(n)])
def test_every_shipped_plan_runs_through_the_executor(name, kernel, tmp_path):
    plan = plan_for(name, tmp_path / "out")
    code, results = execute(plan, tmp_path)
    assert code == 0, results["errors"]
    assert {o["id"] for o in results["probes"]} == {p["id"] for p in plan.probes}
    assert all(o["delivered"] for o in results["probes"]), [o for o in results["probes"] if not o["delivered"]]


@pytest.mark.parametrize("scenario", ["planned-move", "node-crash"])
def test_a_failover_moves_the_vip_under_a_stream_of_requests(scenario, kernel, tmp_path):
    from lab.verdicts.failover import judge_failover

    topo = load_topology(str(ROOT / "topologies" / "exchange-cluster-failover.yaml"))
    plan = loopback_plan(build_plan(topo, "t1", str(tmp_path / "out"), failover=scenario))
    fo = plan.failover
    owner = next(h for h in plan.hosts if h["name"] == fo["from"]["host"])
    fo["port"] = next(s["port"] for s in owner["listeners"] if s["service"] == fo["service"])
    fo["warmup"], fo["deadline"] = 0.3, 5.0  # loopback answers at once
    kernel.sas[owner["ns"]] = [{"vip": {"uniqueid": "7", "state": "ESTABLISHED"}}]
    client = next(h for h in plan.hosts if h["name"] == fo["src"])  # its SA with the VIP is up
    kernel.events[client["ns"]] = [("child-updown", {"up": "yes", "peer-vip": {
        "remote-host": fo["vip"], "local-host": fo["src_address"], "child-sas": {"c-1": {"spi-in": "c0ffee01"}}}})]
    code, results = execute(plan, tmp_path)
    assert code == 0, results["errors"]
    done = results["failover"]
    assert done["requests"] and all(r["ok"] for r in done["requests"])
    if scenario == "planned-move":
        nft = kernel.commands("nft")[0]
        assert fo["vip"] in nft.input and fo["from"]["port"] in nft.input
        [terminate] = kernel.charons[owner["ns"]].commands("terminate")
        assert terminate["ike-id"] == "7"
        assert any(c.argv[-5:] == ["addr", "del", fo["vip_cidr"], "dev", fo["from"]["ifname"]] for c in kernel.calls)
        assert any("policy" in c.argv and "block" in c.argv for c in kernel.calls)  # the service offline first
        assert f"{owner['name']}: deleted 1 IKE_SAs (peers told)" in done["steps"]
    else:
        assert any(c.argv[-4:] == ["link", "set", fo["from"]["ifname"], "down"] for c in kernel.calls)
        assert "charon killed, link down (crash)" in done["steps"][0]
    assert kernel.commands("gratuitous-arp") and done["steps"][-1].endswith("VIP taken, gratuitous ARP sent")
    assert any(c.argv[-5:] == ["addr", "add", fo["vip_cidr"], "dev", fo["to"]["ifname"]] for c in kernel.calls)
    verdict = judge_failover(fo, done, results["events"], [], "fast", results["received"])
    assert verdict.outage is not None and verdict.ok and verdict.failed_requests == 0
    assert sum(verdict.answered_by.values()) == verdict.requests and "outage" in verdict.reason


def test_an_ikev1_responder_gets_its_reply_guard_and_its_count_is_collected(kernel, tmp_path):
    # windows-2003-ikev1: both hosts keep the default response rule (lab.compile.reply_guard).
    plan = plan_for("windows-2003-ikev1", tmp_path / "out")
    guarded = {h["ns"]: h["name"] for h in plan.hosts if h.get("reply_guard")}
    assert set(guarded.values()) == {"fe", "be"}
    kernel.answer(r"iptables-legacy -w -t filter -L lab-held-reply",
                  "Chain lab-held-reply (1 references)\n pkts bytes target prot opt in out source destination\n"
                  "    2   120 DROP       0    --  *      *       0.0.0.0/0            0.0.0.0/0\n")
    code, results = execute(plan, tmp_path)
    assert code == 0, results["errors"]
    restores = kernel.commands("iptables-legacy-restore")
    assert {c.argv[3] for c in restores} == set(guarded)  # ip netns exec NS iptables-legacy-restore
    assert all("--dir out --pol none -j lab-held-reply" in c.input for c in restores)
    assert results["held_replies"] == {"fe": 2, "be": 2}
