"""Issue 10, point 8: input that used to crash, hang or slip through.

Time bounds are CPU seconds (time.process_time), so a loaded machine cannot fail them.
Each case becomes one `FILE:LINE: field: message` line and exit 2 (in line order), or is
accepted because it is valid. The CLI is run in-process, as a user would run it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lab.cli import main
from lab.model.errors_text import suggest
from lab.model.load import load_topology

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGIES = ROOT / "topologies"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def variant(tmp_path: Path, source: str, old: str, new: str) -> Path:
    text = (TOPOLOGIES / source).read_text()
    assert old in text, old
    path = tmp_path / source
    path.write_text(text.replace(old, new, 1))
    return path


def refused(capsys, path: Path, verb: str = "validate") -> list[str]:
    """The problem lines of a refused file: exit 2, every line FILE:LINE: ..., in line order."""
    code, _, err = run(capsys, verb, path)
    lines = err.splitlines()
    assert code == 2, err
    assert lines and all(line.startswith(f"{path}:") for line in lines), err
    numbers = [int(line[len(str(path)) + 1:].split(":")[0]) for line in lines]
    assert numbers == sorted(numbers), err
    return lines


def only(capsys, path: Path, expected: str, verb: str = "validate") -> None:
    assert refused(capsys, path, verb) == [f"{path}:{expected}"]


# ---- tracebacks ---------------------------------------------------------------------------------


def test_nat_outside_network_written_as_a_host_address(tmp_path, capsys):
    path = variant(tmp_path, "nat-ikev2.yaml", "internal: 10.10.2.0/24", "internal: 10.10.2.5/24")
    only(capsys, path, "15: networks.internal: '10.10.2.5/24' has host bits set; the subnet is "
         "10.10.2.0/24")


def test_nat_outside_network_missing(tmp_path, capsys):
    path = variant(tmp_path, "nat-ikev2.yaml", "  internal: 10.10.2.0/24\n", "")
    lines = refused(capsys, path)
    assert lines[0] == f"{path}:19: hosts.fw.interfaces.internal: no network 'internal'; networks are dmz"


def test_compile_unknown_host(capsys):
    code, out, err = run(capsys, "compile", TOPOLOGIES / "exchange-fe-be-http.yaml", "--host", "fe2")
    assert code == 2 and not out
    assert err.startswith("lab: error: --host: no host 'fe2' in ") and "(did you mean 'fe'?)" in err
    assert len(err.splitlines()) == 1


def test_compile_empty_host_is_no_host(capsys):
    code, out, err = run(capsys, "compile", TOPOLOGIES / "exchange-fe-be-http.yaml", "--host", "")
    assert code == 2 and not out and "no host ''" in err and "did you mean" not in err


def test_compile_one_host_prints_plain_json(capsys):
    code, out, _ = run(capsys, "compile", TOPOLOGIES / "exchange-fe-be-http.yaml", "--host", "fe")
    assert code == 0 and "\x1b[" not in out
    assert list(json.loads(out)) == ["fe"]


@pytest.mark.parametrize("flow", [True, False])
def test_deep_nesting(tmp_path, capsys, flow):
    path = tmp_path / "deep.yaml"
    deep = "[" * 300 + "]" * 300 if flow else "".join(f"\n{'  ' * (i + 1)}k:" for i in range(300))
    path.write_text(f"name: x\nnetworks: {{lan: 10.0.0.0/24}}\nhosts: {deep}\n")
    lines = refused(capsys, path)
    assert len(lines) == 1 and "invalid YAML: nested more than 64 levels deep" in lines[0]


# ---- decimals and non-numbers -------------------------------------------------------------------


@pytest.mark.parametrize("source, old, new, expected", [
    ("exchange-fe-be-http.yaml", "protocol: tcp, port: 80}", "protocol: tcp, port: 80.0}",
     "policies.fe-to-be-http.rules[0].filter.port: must be a port number 1-65535 (got 80.0)"),
    ("exchange-fe-be-http.yaml", "action: require\n", "action: require\n        pfs: 14.0\n",
     "policies.fe-to-be-http.rules[0].pfs: must be a Diffie-Hellman group: 1, 2, 5, 14, 15, 16, "
     "19, 20, 21 or 31 (got 14.0)"),
    ("exchange-fe-be-http.yaml", "ike: {version: 2}", "ike: {version: 2}\nexemptions: 0.0",
     "exemptions: must be windows-2000, windows-2003 or a number 0-3 (got 0.0)"),
    ("exchange-fe-be-http.yaml", "ike: {version: 2}", "ike: {version: 2.0}",
     "ike.version: must be 1 or 2 (got 2.0)"),
    ("firewall-ipsec-ruleset.yaml", "protocol: udp, port: 500}", "protocol: udp, port: 500.0}",
     "hosts.fw.firewall.allow[0].port: must be a port number 1-65535 (got 500.0)"),
    ("exchange-cluster-failover.yaml", "max_seconds: 6,", "max_seconds: .nan,",
     "failover[0].max_seconds: must be a number of seconds greater than 0 (got nan)"),
    ("exchange-cluster-failover.yaml", "max_seconds: 6,", "max_seconds: .inf,",
     "failover[0].max_seconds: must be a number of seconds greater than 0 (got inf)"),
    ("exchange-cluster-failover.yaml", "max_seconds: 6,", "max_seconds: 6, rate: .inf,",
     "failover[0].rate: must be a number of requests per second, 1-100 (got inf)"),
    ("exchange-cluster-failover.yaml", "max_seconds: 6,", "max_seconds: 6, rate: -.inf,",
     "failover[0].rate: must be a number of requests per second, 1-100 (got -inf)"),
    ("exchange-cluster-failover-windows.yaml", "time_scale: 0.05}", "time_scale: .NaN}",
     "policies.vip-w2000.timers.time_scale: must be a number greater than 0, at most 1 (got nan)"),
])
def test_decimals_and_non_numbers_are_refused(tmp_path, capsys, source, old, new, expected):
    path = variant(tmp_path, source, old, new)
    lines = refused(capsys, path)
    assert len(lines) == 1 and lines[0].split(": ", 1)[1] == expected, lines


def test_whole_numbers_are_read_exactly(tmp_path, capsys):
    path = variant(tmp_path, "exchange-fe-be-http.yaml", "protocol: tcp, port: 80}",
                   "protocol: tcp, port: 0x50}")
    rule = load_topology(path).policy("fe-to-be-http").rules[0]
    assert rule.filter.destination_port == 80


# ---- accepted although wrong --------------------------------------------------------------------

LAN = """\
name: x
networks: {a: 10.0.1.0/24, b: 10.0.2.0/24}
hosts:
  r1: {role: firewall, interfaces: {a: 10.0.1.1, b: 10.0.2.1}}
  r2: {role: firewall, interfaces: {a: 10.0.1.2, b: 10.0.2.2}}
  pc: {role: client, interfaces: {a: 10.0.1.5}, gateway: r1, policy: p}
  pd: {role: client, interfaces: {a: 10.0.1.6}}
policies:
  p:
    rules:
      - {name: r, filter: {from: me, to: pd}, action: require}
"""


def lan(tmp_path: Path, old: str, new: str) -> Path:
    assert old in LAN, old
    path = tmp_path / "lan.yaml"
    path.write_text(LAN.replace(old, new, 1))
    return path


def test_the_base_of_these_cases_is_valid(tmp_path):
    assert load_topology(lan(tmp_path, "", ""))


@pytest.mark.parametrize("old, new, expected", [
    ("{a: 10.0.1.0/24, b: 10.0.2.0/24}", "{a: 10.0.0.0/16, b: 10.0.2.0/24}",
     "2: networks.b: 10.0.2.0/24 overlaps network a (10.0.0.0/16, line 2)"),
    ("10.0.1.1, b: 10.0.2.1}}", "10.0.1.1, b: 10.0.2.1}, gateway: r2}",
     "5: hosts.r2.gateway: no host 'r2'"),  # replaced below: r2 -> r1 as well
    ("gateway: r1, policy: p", "gateway: pd, policy: p",
     "6: hosts.pc.gateway: 'pd' is on one network only, so it routes nothing; a gateway needs an "
     "interface on each network it joins"),
    ("action: require}", "action: require, tunnel: pc}",
     "11: policies.p.rules[0].tunnel: pc applies policy p, so this tunnel would end at itself; "
     "name the host at the far end"),
    ("to: pd}", "to: pc}",
     "11: policies.p.rules[0].filter.to: pc applies policy p itself; write me for it, and a peer "
     "on the other side"),
    ("{from: me, to: pd}", "{from: 10.0.1.5, to: me}",
     "11: policies.p.rules[0].filter.from: 10.0.1.5 is pc's own address, and pc applies policy p; "
     "write me for it, and a peer on the other side"),
])
def test_wrong_designs_are_refused(tmp_path, capsys, old, new, expected):
    path = lan(tmp_path, old, new)
    if "gateway: r2" in new:  # two hosts that are each other's gateway
        path.write_text(path.read_text().replace("10.0.1.2, b: 10.0.2.2}}",
                                                 "10.0.1.2, b: 10.0.2.2}, gateway: r1}"))
        expected = ("5: hosts.r2.gateway: gateways form a loop (r2 -> r1 -> r2); packets would "
                    "circle between them")
    only(capsys, path, expected)


def test_nested_networks_overlap_once_each(tmp_path, capsys):
    path = lan(tmp_path, "networks: {a: 10.0.1.0/24, b: 10.0.2.0/24}",
               "networks: {a: 10.0.1.0/24, b: 10.0.2.0/24, c: 10.0.0.0/8}")
    lines = refused(capsys, path)
    assert [line.split(": ", 2)[1] for line in lines] == ["networks.c", "networks.c"]


# ---- slow or huge -------------------------------------------------------------------------------


def test_alias_bomb_is_refused_quickly_in_one_short_line(tmp_path, capsys):
    levels = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("name: x\nnetworks: {lan: 10.0.0.0/24}\n"
                    "hosts: {pc: {role: client, interfaces: {lan: 10.0.0.5}}}\ndescription:\n  "
                    + "\n  ".join(levels) + "\n")
    start = time.process_time()
    lines = refused(capsys, path)
    assert time.process_time() - start < 5
    assert lines == [f"{path}:9: invalid YAML: aliases expand to more than 100,000 values; "
                     "write the values out instead"]


def test_a_few_aliases_are_fine(tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text("name: x\nnetworks: {lan: 10.0.0.0/24}\nhosts:\n"
                    "  pc: &client {role: client, interfaces: {lan: 10.0.0.5}}\n"
                    "  pd: {<<: *client, interfaces: {lan: 10.0.0.6}}\n")
    topology = load_topology(path)
    assert [h.role for h in topology.hosts] == ["client", "client"]


def test_did_you_mean_over_thousands_of_names_is_fast():
    known = tuple(f"host{i}" for i in range(2000))
    start = time.process_time()
    hints = [suggest(f"nope{i}x", known) for i in range(2000)]
    assert time.process_time() - start < 8  # difflib: 5.8 s idle; rapidfuzz ~1 s on a loaded machine
    start = time.process_time()
    assert {suggest("nope", known) for _ in range(2000)} == {""}  # one typo, many times: cached
    assert time.process_time() - start < 1
    assert suggest("host12x", known) == " (did you mean 'host12'?)"
    assert suggest("expectations", ("expect", "exemptions")) == " (did you mean 'expect'?)"
    assert len(hints) == 2000


def test_nat_onto_a_slash_8_takes_the_top_addresses(tmp_path):
    path = variant(tmp_path, "nat-ikev2.yaml", "internal: 10.10.2.0/24", "internal: 10.0.0.0/8")
    path.write_text(path.read_text().replace("dmz: 10.10.1.0/24", "dmz: 192.168.1.0/24")
                    .replace("dmz: 10.10.1.1", "dmz: 192.168.1.1")
                    .replace("dmz: 10.10.1.10", "dmz: 192.168.1.10"))
    start = time.process_time()
    nat = load_topology(path).nat
    assert time.process_time() - start < 5  # listing 16 million addresses took 12 s and 1.45 GB
    assert [(n, str(a)) for n, a in nat.mapped] == [("fe", "10.255.255.254")]


def test_compile_of_many_hosts_prints_plain_json(tmp_path, capsys):
    hosts = "\n".join(f"  h{i}: {{role: client, interfaces: {{lan: 10.0.{i // 250}.{i % 250 + 2}}}, "
                      "policy: p}" for i in range(500))
    path = tmp_path / "many.yaml"
    path.write_text(f"name: x\nnetworks: {{lan: 10.0.0.0/16}}\nhosts:\n{hosts}\npolicies:\n"
                    "  p: {rules: [{name: r, filter: {from: me, to: any}, action: require}]}\n")
    start = time.process_time()
    code, out, _ = run(capsys, "compile", path)
    assert code == 0 and len(json.loads(out)) == 500
    assert time.process_time() - start < 20  # rich's print_json: most of 12.6 s for 2,000 hosts


# ---- messages -----------------------------------------------------------------------------------


def test_control_character_at_its_own_line(tmp_path, capsys):
    path = tmp_path / "ctrl.yaml"
    path.write_text("name: x\nnetworks: {lan: 10.0.0.0/24}\nhosts:\n"
                    "  pc: {role: client, interfaces: {lan: 10.0.0.5}}\ndescription: a\x07b\n")
    only(capsys, path, "5: invalid YAML: control character U+0007 is not allowed; remove it")


def test_unclosed_quote_where_it_opened(tmp_path, capsys):
    path = tmp_path / "quote.yaml"
    path.write_text("name: x\ndescription: 'abc\nnetworks: {lan: 10.0.0.0/24}\nhosts:\n"
                    "  pc: {role: client, interfaces: {lan: 10.0.0.5}}\n\n\n")
    only(capsys, path, "2: invalid YAML: this quote is never closed")


@pytest.mark.parametrize("tagged", ["!!set {a, b}", "!!omap [{a: 1}]", "!!binary aGk=", "!mine x",
                                    "!!str 80"])
def test_yaml_tags_are_refused_without_python_internals(tmp_path, capsys, tagged):
    path = tmp_path / "tag.yaml"
    path.write_text(f"name: x\nnetworks: {{lan: 10.0.0.0/24}}\nhosts: {tagged}\n")
    lines = refused(capsys, path)
    assert len(lines) == 1 and lines[0].startswith(f"{path}:3: invalid YAML: YAML tag !")
    assert "odict" not in lines[0] and "Tagged" not in lines[0]


def test_duplicate_anchor_prints_no_warning(tmp_path, capsys):
    path = tmp_path / "anchor.yaml"
    path.write_text("name: x\nnetworks: {lan: 10.0.0.0/24}\nhosts:\n"
                    "  pc: &h {role: client, interfaces: {lan: 10.0.0.5}}\n"
                    "  pd: &h {role: client, interfaces: {lan: 10.0.0.6}}\n")
    code, _, err = run(capsys, "validate", path)
    assert code == 0 and err == ""


def test_schema_and_semantic_problems_in_line_order(tmp_path, capsys):
    path = tmp_path / "order.yaml"
    path.write_text("name: x\nnetworks: {lan: 10.0.0.0/24}\nhosts:\n"
                    "  pc: {role: client, interfaces: {lan: 10.0.0.5}, gateway: nope}\n"
                    "  pd: {role: clientx, interfaces: {lan: 10.0.0.6}}\n")
    lines = refused(capsys, path)
    assert [line.split(": ")[1] for line in lines] == ["hosts.pc.gateway", "hosts.pd.role"]


def test_host_names_that_are_not_text(tmp_path, capsys):
    path = tmp_path / "keys.yaml"
    path.write_text("name: x\nnetworks: {lan: 10.0.0.0/24}\nhosts:\n"
                    "  pc: {role: client, interfaces: {lan: 10.0.0.5}, cluster: c}\n"
                    "  null: {role: client, interfaces: {lan: 10.0.0.6}, cluster: c}\n"
                    "  1: {role: client, interfaces: {lan: 10.0.0.7}}\n"
                    "clusters:\n  c: {vip: 10.0.0.9, owner: pc}\n")
    lines = refused(capsys, path)
    assert [line.split(": ")[1] for line in lines] == ["hosts.None", "hosts.1", "clusters.c"]
