"""`lab import` and `lab export`: argument parsing and file handling for lab.windows."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from lab.errors import TopologyError

IMPORT_HELP = """\
Each FILE is a netsh ipsec static, ipseccmd/ipsecpol or netsh advfirewall consec script.
Write HOST=FILE to give the policy the script assigns to that host. With --into BASE the
scripts' policies replace the base's policies of the same name and the base's networks, hosts
and expectations are kept, so `lab verify` can run the result. Anything that cannot be mapped
exactly is refused, one line each (file:line: reason), exit 2, nothing written.
See docs/windows-import-export.md.

example:
  lab import fe=tests/data/windows/kb821839-b-fe.netsh.cmd \\
      --into topologies/kb821839-b.yaml -o x.yaml
"""


def add_parsers(sub, cmd_import, cmd_export) -> None:
    i = sub.add_parser("import", help="read Windows IPsec scripts (netsh, ipseccmd, consec) into a "
                       "topology", description=IMPORT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("files", nargs="+", metavar="[HOST=]FILE")
    i.add_argument("--host", action="append", default=[], metavar="NAME=ADDRESS",
                   help="name an address: filters to it name the host")
    i.add_argument("--into", metavar="BASE", help="topology whose networks, hosts and "
                   "expectations the result keeps")
    i.add_argument("-o", "--output", metavar="FILE", help="write here (default: standard output)")
    i.set_defaults(func=cmd_import)

    e = sub.add_parser("export", help="write the Windows script that deploys a host's policy",
                       description="Write the script (netsh ipsec static, ipseccmd or netsh "
                       "advfirewall consec) that configures HOST's policy on Windows. What the "
                       "format cannot express is refused (exit 2). The preshared key is "
                       "%%IPSEC_PSK%%, never a real key.")
    e.add_argument("topology")
    e.add_argument("--host", required=True)
    e.add_argument("--format", required=True, choices=("netsh", "ipseccmd", "consec"))
    e.add_argument("-o", "--output", metavar="FILE", help="write here (default: standard output)")
    e.set_defaults(func=cmd_export)


def _hosts(values: list[str]) -> dict[str, str]:
    out, problems = {}, []
    for v in values:
        name, _, address = v.partition("=")
        try:
            out[name] = str(ipaddress.IPv4Address(address))
        except ValueError:
            problems.append(f"--host {v}: expected NAME=IPv4-ADDRESS")
    if problems:
        raise TopologyError(problems)
    return out


def run_import(args, err) -> int:
    from lab.windows.importer import read_script
    from lab.windows.mapper import build, check

    hosts = _hosts(args.host)
    drafts, problems = [], []
    for spec in args.files:
        host, sep, path = spec.partition("=")
        if not sep or "/" in host:
            host, path = None, spec
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else e.strerror
            problems.append(f"{path}: cannot read: {why}")
            continue
        me = {hosts[host]} if host in hosts else set()
        drafts.append((read_script(path, text, me), host))
    if problems:
        raise TopologyError(problems)
    name = Path(args.output).stem if args.output else "imported"
    result = build(drafts, hosts, base=args.into, name=name.lower())
    check(result.text, args.output or "<import>")
    for note in result.notes:
        err.print(f"lab import: {note}", highlight=False)
    _write(args.output, result.text)
    return 0


def run_export(args) -> int:
    from lab.model.load import load_topology
    from lab.windows.writers import export

    text = export(load_topology(args.topology), args.host, args.format)
    _write(args.output, text)
    return 0


def _write(path: str | None, text: str) -> None:
    if not path:
        sys.stdout.write(text)
        return
    tmp = f"{path}.tmp{os.getpid()}"
    Path(tmp).write_text(text, encoding="utf-8")
    os.replace(tmp, path)
