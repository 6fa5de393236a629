"""lab import / lab export: Windows IPsec scripts to and from topology policies.

The round trip is the contract: for every shipped topology, every host's policy exported in a
format and imported again is the policy that was verified (with the lab's default algorithms
written out, as the script offers them), or the export says why the format cannot carry it.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from lab.cli import main
from lab.errors import TopologyError
from lab.model.load import load_topology
from lab.model.topology import Filter, Policy, Topology
from lab.windows.importer import read_script
from lab.windows.mapper import build, check
from lab.windows.writers import FORMATS, expand, expand_methods, export

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "windows"
TOPOLOGIES = sorted((ROOT / "topologies").glob("*.yaml"))
KB_B = ROOT / "topologies" / "kb821839-b.yaml"


def policy_of(topology: Topology, host: str) -> Policy:
    h = topology.host(host)
    name = h.policy or next(c.policy for c in topology.clusters if c.name == h.cluster)
    return next(p for p in topology.policies if p.name == name)


def canonical(policy: Policy, keep_description: bool) -> Policy:
    """Offers with the lab's defaults written out; filters seen from `me` (a mirrored filter
    is the same filter either way round: consec rules have no direction)."""
    rules = []
    for r in policy.rules:
        f = r.filter
        if f.destination.kind == "me" and f.source.kind != "me":
            f = Filter(f.destination, f.source, f.protocol, f.destination_port, f.source_port)
        rules.append(replace(r, filter=f, security=tuple(expand(r)) if r.negotiates else ()))
    return replace(policy, rules=tuple(rules), respond_security=tuple(expand_methods(policy.respond_security)),
                   description=policy.description if keep_description else "")


def import_into(tmp_path: Path, base: Path, host: str, script: str, fmt: str,
                stem: str) -> Topology:
    path = tmp_path / f"{stem}.{fmt}.cmd"
    path.write_text(script)
    topology = load_topology(base)
    me = {str(a) for a in topology.host(host).addresses}
    result = build([(read_script(str(path), script, me), host)], {}, base=str(base))
    out = tmp_path / "imported.yaml"
    out.write_text(result.text)
    return load_topology(out)


def cases():
    for path in TOPOLOGIES:
        topology = load_topology(path)
        for host in topology.hosts:
            if host.policy or host.cluster:
                for fmt in FORMATS:
                    yield pytest.param(path, host.name, fmt, id=f"{path.stem}-{host.name}-{fmt}")


def round_trip(tmp_path: Path, path: Path, host: str, fmt: str) -> bool:
    """True: exported and imported back unchanged; False: the export said why it cannot."""
    topology = load_topology(path)
    original = policy_of(topology, host)
    try:
        script = export(topology, host, fmt)
    except TopologyError as e:
        assert e.problems and all(f": {fmt}: " in p for p in e.problems), e.problems
        return False
    assert "%IPSEC_" in script or original.builtin
    again = import_into(tmp_path, path, host, script, fmt, original.name)
    keep = fmt == "netsh"  # only netsh carries the policy's description
    assert canonical(policy_of(again, host), keep) == canonical(original, keep)
    assert again.host(host).exemptions == topology.host(host).exemptions
    if fmt != "consec":
        assert again.ike_methods == topology.ike_methods
        assert again.ike_lifetime_minutes == topology.ike_lifetime_minutes
    return True


@pytest.mark.parametrize(("path", "host", "fmt"), list(cases()))
def test_round_trip_or_a_reason(tmp_path, path, host, fmt):
    round_trip(tmp_path, path, host, fmt)


@pytest.mark.parametrize(("topology", "host", "fmt"), [
    ("windows-2003-ikev1", "fe", "netsh"), ("windows-2003-ikev1", "fe", "ipseccmd"),
    ("ipsec-restricted-publishing", "edge", "consec"),
    ("ipsec-restricted-publishing", "roamer", "consec"),
    ("mismatched-filters-ikev1", "be", "consec"),
    ("windows-default-policies", "a-req", "netsh"),
    ("windows-default-policies", "b-sec", "ipseccmd"),
])
def test_these_shipped_policies_do_round_trip(tmp_path, topology, host, fmt):
    """No format passes the round trip only by refusing everything."""
    assert round_trip(tmp_path, ROOT / "topologies" / f"{topology}.yaml", host, fmt)


def test_what_each_format_cannot_carry_is_refused(tmp_path):
    for topology, host, fmt in (("kb821839-b", "fe", "consec"), ("kb821839-b", "fe", "netsh"),
                                ("firewall-tunnels", "fw", "netsh"),
                                ("exchange-cluster-failover-windows", "fe-2000", "netsh"),
                                ("windows-default-policies", "a-req", "consec")):
        assert not round_trip(tmp_path, ROOT / "topologies" / f"{topology}.yaml", host, fmt)


def test_expanded_defaults_compile_to_the_same_proposals():
    """Writing the lab's default algorithms out changes nothing charon is told."""
    from lab.compile.proposals import child_proposals

    for path in TOPOLOGIES:
        for policy in load_topology(path).policies:
            for rule in policy.rules:
                if rule.negotiates:
                    written = replace(rule, security=tuple(expand(rule)))
                    assert child_proposals(written) == child_proposals(rule), (path, rule.name)


# ---- the samples ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sample", ["kb821839-b-fe.netsh.cmd", "kb821839-b-fe.ipseccmd.cmd",
                                    "fe-design.consec.cmd"])
def test_samples_reproduce_kb821839_b(tmp_path, capsys, sample):
    out = tmp_path / "x.yaml"
    assert main(["import", f"fe={DATA / sample}", "--into", str(KB_B), "-o", str(out)]) == 0
    imported, shipped = load_topology(out), load_topology(KB_B)
    assert imported.host("fe").policy == "fe-design"
    got = policy_of(imported, "fe")
    want = policy_of(shipped, "fe")
    assert [(r.name, r.filter, r.action) for r in got.rules] == \
        [(r.name, r.filter, r.action) for r in want.rules]
    assert all(r.security[0].protocol.value == "esp" for r in got.rules)
    assert imported.expectations == shipped.expectations
    text = DATA.joinpath(sample).read_text()
    assert "Syntax:" in text.split("\n", 8)[3] or "Syntax:" in text  # cites its document


def test_samples_name_their_microsoft_document():
    for sample in DATA.glob("*.cmd"):
        head = sample.read_text().split("\n")[:8]
        assert any("Syntax:" in line for line in head), sample


# ---- refusals --------------------------------------------------------------------------------

REFUSED = [
    ("netsh ipsec static add rule name=r policy=p filterlist=l filteraction=a kerberos=yes",
     "Kerberos"),
    ("netsh advfirewall consec add rule name=r endpoint1=any endpoint2=10.0.0.1 "
     "action=requireinrequireout auth1=computerkerb qmsecmethods=esp:sha1-aes128",
     "auth1=computerkerb: the lab cannot authenticate IKE with Kerberos"),
    ("netsh advfirewall consec add rule name=r endpoint1=any endpoint2=any "
     "action=requireinclearout auth1=computercert qmsecmethods=esp:sha1-aes128", "one-way"),
    ("netsh ipsec static add filter filterlist=l srcaddr=me dstaddr=10.0.0.1 mirrored=no",
     "one-way"),
    ("netsh ipsec static add filteraction name=a action=negotiate "
     "qmsecmethods=AH[MD5]+ESP[DES,SHA1]", "AH+ESP"),
    ("ipseccmd -f 0+10.0.0.1:80:TCP -n ESP[3DES,SHA]", "dynamic mode"),
    ("ipseccmd -w REG -p P -r R -f 0=10.0.0.1:80:TCP -n ESP[3DES,SHA] -a PRESHARE:\"k\"",
     "one-way"),
    ("ipseccmd -w REG -p P -r R -f 0+10.0.0.1 -n ESP[3DES,SHA] -a KERBEROS", "Kerberos"),
    ("netsh ipsec static add filter filterlist=l srcaddr=me dstaddr=DNS", "server-type"),
    ("netsh ipsec static add policy name=p mmpfs=yes", "master key PFS"),
    ("netsh ipsec static set defaultrule policy=nope qmsecmethods=ESP[3DES,SHA1] psk=k",
     "no policy 'nope' added before this line"),
    ('netsh ipsec static set defaultrule policy="Client (Respond Only)" qmsecmethods=AH[SHA1]',
     "the lab's built-in is fixed"),
    ("copy a b", "not an IPsec command"),
    ('netsh ipsec static add filter filterlist="unbalanced srcaddr=me', "cannot read"),
]


@pytest.mark.parametrize(("line", "reason"), REFUSED)
def test_refused_with_file_line_and_reason(tmp_path, capsys, line, reason):
    script = tmp_path / "s.cmd"
    script.write_text(f"rem a comment\n{line}\n")
    code = main(["import", str(script), "-o", str(tmp_path / "out.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{script}:2: " in err and reason in err, err
    assert not (tmp_path / "out.yaml").exists()


def test_rules_need_their_filter_list_and_action(tmp_path, capsys):
    script = tmp_path / "s.cmd"
    script.write_text("netsh ipsec static add policy name=P\n"
                      "netsh ipsec static add rule name=R policy=P filterlist=L filteraction=A "
                      "psk=k\n")
    assert main(["import", str(script)]) == 2
    assert f"{script}:2: filter list 'L' has no filters" in capsys.readouterr().err


def test_export_refusals_exit_2(capsys):
    code = main(["export", str(KB_B), "--host", "fe", "--format", "consec"])
    err = capsys.readouterr().err
    assert code == 2 and "no default response rule" in err
    code = main(["export", str(KB_B), "--host", "legacy", "--format", "netsh"])
    assert code == 2 and "no policy" in capsys.readouterr().err


def test_export_never_writes_a_key(capsys):
    path = ROOT / "topologies" / "windows-2003-ikev1.yaml"
    assert main(["export", str(path), "--host", "fe", "--format", "netsh"]) == 0
    out = capsys.readouterr().out
    assert 'psk="%IPSEC_PSK%"' in out and "ESP[3DES,SHA1]:100000k/3600s ESP[DES,MD5]" in out


def test_builtin_policies_keep_their_windows_names(tmp_path, capsys):
    path = ROOT / "topologies" / "windows-default-policies.yaml"
    for host, win in (("a-resp", "Client (Respond Only)"), ("a-req", "Server (Request Security)"),
                      ("a-sec", "Secure Server (Require Security)")):
        assert main(["export", str(path), "--host", host, "--format", "netsh"]) == 0
        assert f'set policy name="{win}" assign=yes' in capsys.readouterr().out


def test_fresh_topology_from_hosts(tmp_path, capsys):
    out = tmp_path / "fresh.yaml"
    code = main(["import", f"fe={DATA / 'kb821839-b-fe.netsh.cmd'}", "--host", "fe=10.10.1.10",
                 "--host", "be=10.10.2.20", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    topology = load_topology(out)
    assert topology.host("fe").policy == "fe-design"
    assert policy_of(topology, "fe").rules[0].filter.destination.text == "be"


def test_netsh_tags_may_be_shortened_or_spaced(tmp_path):
    text = ("netsh ipsec static add policy name = P assign=yes\n"
            "netsh ipsec static add filter filterlist=L srcaddr=me dstaddr=10.1.0.0 dstmask=16 "
            "protocol=UDP dstport=53\n"
            "netsh ipsec static add filteraction A negotiate inpass=y soft=y "
            "qmsec=\"ESP[None,SHA1]\"\n"
            "netsh ipsec static add rule name=R policy=P filterlist=L filteraction=A "
            "rootca=\"CN=x\"\n")
    draft = read_script("s.cmd", text.replace("filteraction A negotiate",
                                              "filteraction name=A action=negotiate"))
    assert draft.problems == []
    rule = draft.policies["p"].rules[0]
    assert (rule.dst, rule.protocol, rule.dst_port, rule.action) == ("10.1.0.0/16", "udp", 53,
                                                                      "request")
    assert rule.security == [{"protocol": "esp", "encryption": "null", "integrity": "sha1"}]
    assert draft.auth[0][0] == "certificates"


# ---- fuzz: mutated scripts are imported or refused, never a traceback ---------------------------

_MUTATIONS = ["=", '"', "[", "]", ",", ":", "+", "-", "/", "^", "0", "99999", "me", "any",
              "ESP[", "AH[MD5]+", "yes", "no", "\\\\", "%", " ", ""]


def _mutate(rng: random.Random, line: str) -> str:
    words = line.split(" ")
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(words))
        how = rng.randrange(4)
        if how == 0:
            words[i] = rng.choice(_MUTATIONS)
        elif how == 1:
            words.insert(i, rng.choice(_MUTATIONS))
        elif how == 2 and len(words) > 1:
            del words[i]
        else:
            cut = rng.randrange(len(words[i]) + 1)
            words[i] = words[i][:cut] + rng.choice(_MUTATIONS) + words[i][cut:]
    return " ".join(words)


def test_fuzz_mutated_scripts_never_crash(tmp_path):
    rng = random.Random(15)
    samples = [p.read_text().splitlines() for p in sorted(DATA.glob("*.cmd"))]
    base = str(KB_B)
    for n in range(600):
        lines = list(rng.choice(samples))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(lines))
            lines[i] = _mutate(rng, lines[i])
        text = "\n".join(lines) + "\n"
        path = f"{tmp_path}/m{n}.cmd"
        draft = read_script(path, text, {"10.10.1.10"})
        for p in draft.problems:
            assert p.startswith(f"{path}:") and p.split(":")[1].isdigit(), p
        try:
            result = build([(draft, "fe")], {}, base=base)
            check(result.text, "x.yaml")
        except TopologyError as e:
            assert e.problems


def test_the_default_response_rules_methods_travel_through_netsh(tmp_path, capsys):
    """`set defaultrule ... qmsecmethods=` <-> `default_response: {security: [...]}`."""
    script = tmp_path / "be.cmd"
    script.write_text("netsh ipsec static add policy name=only-3des\n"
                      'netsh ipsec static set defaultrule policy=only-3des qmsecmethods="ESP[3DES,SHA1] '
                      'AH[MD5]" psk=k\n'
                      "netsh ipsec static set policy name=only-3des assign=yes\n")
    out = tmp_path / "out.yaml"
    assert main(["import", f"be={script}", "--host", "be=10.0.0.5", "-o", str(out)]) == 0, \
        capsys.readouterr().err
    policy = load_topology(out).policy("only-3des")
    assert policy.respond and [(m.protocol.value, m.encryption, m.integrity) for m in policy.respond_security] \
        == [("esp", "3des", "sha1"), ("ah", None, "md5")]
