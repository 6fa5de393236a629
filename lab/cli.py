"""`lab`: validate, compile and verify IPsec policy designs on a real kernel.

Exit status: 0 every expectation holds; 1 some expectation does not; 2 bad input or a missing
tool; 3 the lab itself could not run (guest or daemon failure); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from rich.console import Console

from lab.errors import LabError, TopologyError
from lab.guest.backends import BACKENDS
from lab.progress import progress_printer as _progress_printer

EPILOG = """\
examples:
  lab verify topologies/exchange-fe-be-http.yaml
  lab verify my-design.yaml --report reports/my-design
  lab validate topologies/*.yaml
  lab compile topologies/exchange-fe-be-http.yaml --host fe
  lab verify topologies/exchange-fe-be-http.yaml --provider docker
  lab predict topologies/kb821839-b.yaml
  lab verify topologies/kb821839-b.yaml --matrix
  lab failover topologies/exchange-cluster-failover.yaml
  lab image build
  lab cleanup

exit status: 0 all expectations hold, 1 some do not, 2 bad input or missing tool,
3 the lab could not run, 130 interrupted.
"""


def cmd_verify(args, out: Console, err: Console) -> int:
    from lab import runner
    from lab.predict.commands import cmd_verify_matrix, lint_before_run

    if args.matrix:
        return cmd_verify_matrix(args, out, err, _progress_printer(err))
    if args.services:
        raise LabError("--services goes with --matrix (lab predict takes it too)")
    lint_before_run(args.topology, err)
    report_dir = args.report or f"reports/{_stem(args.topology)}"
    result = runner.run(args.topology, report_dir, kernel=args.kernel, on_progress=_progress_printer(err),
                        provider=args.provider)
    # The report's modules were imported while the guest ran (lab.runner.preload), not before.
    from lab import report as reports
    from lab.report.table import print_sas, print_summary, print_verdicts

    written = reports.write_all(result, report_dir)
    out.print()
    print_verdicts(result, out)
    if not args.no_sas:
        print_sas(result, out)
    print_summary(result, out)
    for e in result.errors:
        err.print(f"[red]lab run error:[/red] {e}", highlight=False)
    if result.errors:
        err.print(f"logs: {report_dir}/logs/ (console.log: the guest's console; each daemon's log)", highlight=False)
    out.print(f"report: {written.get('html', report_dir)}", highlight=False)
    if result.errors and not result.verdicts:
        return 3
    return 0 if result.ok else 1


def cmd_failover(args, out: Console, err: Console) -> int:
    from lab import runner
    from lab.model.load import load_topology
    from lab.report.failover import print_failover, write_failover

    topo = load_topology(args.topology)
    wanted = [f for f in topo.failovers if (f.name == args.scenario if args.scenario else args.include_slow or not f.slow)]
    if args.scenario and not wanted:
        known = ", ".join(f.name for f in topo.failovers) or "none"
        raise LabError(f"--scenario: no failover {args.scenario!r} in {args.topology} (known: {known})")
    if not wanted:
        raise LabError(f"{args.topology}: no failover scenarios to run (slow ones need --include-slow)")
    report_dir = args.report or f"reports/{_stem(args.topology)}"
    results = []
    for f in wanted:
        err.print(f"[bold]scenario {f.name}[/bold] ({f.mode})")
        results.append(runner.run_failover(args.topology, f.name, f"{report_dir}/{f.name}", kernel=args.kernel,
                                           on_progress=_progress_printer(err), provider=args.provider))
    written = write_failover(results, report_dir, topo.name)
    out.print()
    print_failover(results, out)
    out.print(f"report: {written['html']}", highlight=False)
    return 0 if all(r.ok for r in results) else 1


def cmd_validate(args, out: Console, err: Console) -> int:
    from lab.compile.plan import build_plan
    from lab.model.load import load_topology

    status = 0
    for path in args.topology:
        try:
            topo = load_topology(path)
            build_plan(topo, "check", "/nonexistent")
        except TopologyError as exc:
            print(exc, file=sys.stderr)
            status = 2
            continue
        out.print(f"{path}: ok: {len(topo.hosts)} hosts, {len(topo.ipsec_hosts)} speak IPsec, "
                  f"{len(topo.expectations)} expectations", highlight=False)
    return status


def cmd_compile(args, out: Console, err: Console) -> int:
    from lab.compile.strongswan import compile_host
    from lab.model.errors_text import suggest
    from lab.model.load import load_topology

    topo = load_topology(args.topology)
    names = [h.name for h in topo.hosts]
    if args.host is not None and args.host not in names:  # `--host ''` is no host either
        raise LabError(f"--host: no host {args.host!r} in {args.topology}"
                       f"{suggest(args.host, names)}; its hosts are {', '.join(names)}")
    hosts = [topo.host(args.host)] if args.host is not None else topo.ipsec_hosts
    doc = {h.name: compile_host(topo, h) for h in hosts}
    # plain json: rich's highlighting took 11 s for 2,000 hosts, and a pipe wants no colour
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    return 0


def cmd_import(args, out: Console, err: Console) -> int:
    from lab.windows.cli import run_import

    return run_import(args, err)


def cmd_export(args, out: Console, err: Console) -> int:
    from lab.windows.cli import run_export

    return run_export(args)


def cmd_cleanup(args, out: Console, err: Console) -> int:
    from lab import cleanup

    removed = cleanup.sweep(everything=args.all)
    for r in removed:
        out.print(f"removed {r}", highlight=False)
    if not removed:
        out.print("nothing to clean up")
    return 0


def cmd_doctor(args, out: Console, err: Console) -> int:
    from lab import preflight

    count = preflight.check_everything()  # exits 2 naming each missing program's package
    choice = preflight.choose_kernel("auto")
    out.print(f"tools: ok: all {count} programs the lab may start (strongSwan, the guest kernel, captures, "
              f"real servers and clients, failover, the Docker provider)\nkernel: {choice.describe()}\n"
              f"why: {choice.reason}", highlight=False)
    return 0


def cmd_image(args, out: Console, err: Console) -> int:
    from lab import images

    if args.action == "build":  # strongSwan's image, then one per role with its real servers
        for daemons in [(), *images.ROLE_IMAGES.values()]:
            img = images.build(_progress_printer(err), force=args.force, daemons=daemons)
            out.print(f"{img.tag}  {img.size / 1e6:.0f} MB  {img.tarball}", highlight=False)
        return 0
    built = images.list_images()
    current = images.current_ids()
    for img in built:
        mark = "current" if img.ident in current else "stale"
        out.print(f"{img.tag}  {img.size / 1e6:.0f} MB  built {img.meta.get('built')} in "
                  f"{img.meta.get('build_seconds')} s  {mark}  {img.tarball}", highlight=False)
    missing = current - {img.ident for img in built}
    if missing:
        out.print(f"{len(missing)} image(s) not built yet: `lab image build` (or the first `lab verify --provider docker`)",
                  highlight=False)
    return 0


def _stem(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0]


def _lab_options(p: argparse.ArgumentParser) -> None:
    """Where and as what a live lab runs: shared by every verb that starts one."""
    p.add_argument("--kernel", choices=("auto", "host", "uml"), default="auto",
                   help="where the data plane runs: auto = this kernel if it has ESP/AH, else a UML guest")
    p.add_argument("--provider", choices=tuple(BACKENDS), default=os.environ.get("LAB_PROVIDER", "netns"),
                   help="what a host is: netns = a network namespace (fast, default), docker = a container "
                   "of the lab's strongSwan image run by a private dockerd on the lab kernel (LAB_PROVIDER)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lab", description="Prove an IPsec policy design with real strongSwan daemons, a real "
        "kernel data plane and packets on the wire.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("verify", help="bring the topology up, send every expected flow, judge it from the wire",
                       description="Bring the topology up on a kernel with ESP/AH (a UML guest when this "
                       "kernel has none), send one real probe per expectation, classify each from the "
                       "captures as esp, ah, ah+esp, clear or dropped, print the verdicts and every "
                       "host's SAs, write the report, and tear everything down.")
    v.add_argument("topology", help="topology file (YAML)")
    v.add_argument("--report", metavar="DIR", help="report folder (default: reports/<topology name>)")
    _lab_options(v)
    v.add_argument("--no-sas", action="store_true", help="do not print the SA table")
    v.add_argument("--matrix", action="store_true", help="run every predicted flow (lab predict), not only "
                   "the written expectations; exit 1 where prediction and observation differ")
    v.add_argument("--services", metavar="LIST", help="with --matrix: these services (http,imap,tcp/8080) "
                   "to every host instead of what each offers")
    v.set_defaults(func=cmd_verify)

    from lab.predict.commands import cmd_diff, cmd_predict, cmd_setup
    pr = sub.add_parser("predict", help="predict every flow from the model (nothing is started); lint the expectations",
                        description="For every ordered pair of hosts (and cluster VIPs) and every service the "
                        "destination offers, the result the Windows semantics predict (esp, ah, clear, dropped), "
                        "the rule on each side that decides it and why. Written expectations the model "
                        "contradicts are listed; exit 1 when there is one.")
    pr.add_argument("topology", nargs="+")
    pr.add_argument("--services", metavar="LIST", help="these services (http,imap,tcp/8080) instead of what each host offers")
    pr.add_argument("--json", action="store_true", help="print JSON instead of the table")
    pr.add_argument("--lint", action="store_true", help="only the written expectations the model contradicts")
    pr.set_defaults(func=cmd_predict)

    df = sub.add_parser("diff", help="run two versions of a design as whole matrices; print the flows that changed",
                        description="Run OLD and NEW as whole matrices (lab verify --matrix) and print only the flows "
                        "whose observed result changed, e.g. 'fe -> be imap: esp -> clear'. With --base REF, OLD is "
                        "FILE as it was at that git revision.")
    df.add_argument("files", nargs="+", metavar="FILE", help="OLD NEW, or with --base one FILE")
    df.add_argument("--base", metavar="GIT_REF", help="compare FILE at this git revision with FILE now")
    df.add_argument("--static", action="store_true", help="compare predictions only; start nothing")
    df.add_argument("--fail-uncovered", action="store_true",
                    help="exit 1 when a changed flow has no written expectation in NEW")
    df.add_argument("--markdown", metavar="FILE", help="write a summary for a pull request")
    df.add_argument("--report", metavar="DIR", help="report folder (default: reports/diff-<NEW name>)")
    _lab_options(df)
    df.set_defaults(func=cmd_diff)

    fo = sub.add_parser("failover", help="move a cluster's VIP under load and measure how long protection takes to return",
                        description="For each failover scenario of the topology: bring the lab up, stream requests "
                        "from the client to the cluster's VIP, move the VIP (planned) or crash its owner, and "
                        "measure the outage, the time to a new SA, cleartext to the VIP and packets into the "
                        "stale SA, next to Windows' figures. One lab per scenario.")
    fo.add_argument("topology", help="topology file with clusters: and failover:")
    fo.add_argument("--scenario", metavar="NAME", help="only this scenario")
    fo.add_argument("--include-slow", action="store_true", help="also the full-length Windows timer scenarios")
    fo.add_argument("--report", metavar="DIR", help="report folder (default: reports/<topology name>)")
    _lab_options(fo)
    fo.set_defaults(func=cmd_failover)

    c = sub.add_parser("validate", help="check topology files without starting anything")
    c.add_argument("topology", nargs="+")
    c.set_defaults(func=cmd_validate)

    k = sub.add_parser("compile", help="print the strongSwan connections each host would load (VICI load-conn)")
    k.add_argument("topology")
    k.add_argument("--host", help="only this host")
    k.set_defaults(func=cmd_compile)

    from lab.windows.cli import add_parsers

    add_parsers(sub, cmd_import, cmd_export)

    x = sub.add_parser("cleanup", help="remove guests, daemons, namespaces and files left by killed runs")
    x.add_argument("--all", action="store_true", help="also end runs whose owner is still alive")
    x.set_defaults(func=cmd_cleanup)

    i = sub.add_parser("image", help="the Docker provider's images (strongSwan, and per role with its real servers): build them offline, list what is built")
    i.add_argument("action", choices=("build", "list"))
    i.add_argument("--force", action="store_true", help="build again even if the tag exists")
    i.set_defaults(func=cmd_image)

    su = sub.add_parser("setup", help="install what the lab needs on this machine (for pip users; make setup does the same)")
    su.add_argument("--system", action="store_true", required=True,
                    help="install the Debian packages of lab/programs.txt (the Makefile's list), as root")
    su.add_argument("--dry-run", action="store_true", help="only say what is missing")
    su.set_defaults(func=cmd_setup)

    d = sub.add_parser("doctor", help="check every program the lab may start (naming the Debian package of "
                       "each missing one) and say which kernel the lab would use")
    d.set_defaults(func=cmd_doctor)
    return p


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM tears down exactly as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    # Piped into a file or CI log, rich would squeeze tables into 80 columns.
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120
    out, err = Console(width=width, soft_wrap=True), Console(stderr=True, width=width, soft_wrap=True)
    try:
        return args.func(args, out, err)
    except TopologyError as exc:
        print(exc, file=sys.stderr)  # one problem per line, never wrapped: editors jump to file:line
        return exc.exit_code
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("lab: interrupted; everything the run started has been torn down", highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
