"""The verbs and flags this package adds to `lab`: predict, verify --matrix, diff."""

from __future__ import annotations

from rich.console import Console

from lab.errors import LabError
from lab.model.services import parse_service


def services_option(text: str | None):
    if not text:
        return None
    try:
        return tuple(parse_service(s.strip()) for s in text.split(",") if s.strip())
    except ValueError as e:
        raise LabError(f"--services: {e}") from None


def cmd_predict(args, out: Console, err: Console) -> int:
    from lab.model.load import load_topology
    from lab.predict.matrix import lint, predict_matrix
    from lab.predict.render import as_json, print_lint, print_matrix

    status = 0
    for path in args.topology:
        topology = load_topology(path)
        predictions = predict_matrix(topology, services_option(args.services))
        contradictions = lint(topology)
        written = {e.id: e.result.value for e in topology.expectations}
        if args.json:
            print(as_json(topology, predictions, contradictions, written))
        elif not args.lint:
            print_matrix(topology, predictions, out, written)
        print_lint(contradictions, err)
        covered = sum(p.id in written for p in predictions)
        err.print(f"{path}: {len(predictions)} flows predicted, {covered} covered by written expectations, "
                  f"{len(contradictions)} written expectation(s) contradicted", highlight=False)
        status = status or (1 if contradictions else 0)
    return status


def lint_before_run(path: str, err: Console) -> None:
    """Written expectations the model already contradicts, said before a lab starts."""
    from lab.errors import TopologyError
    from lab.model.load import load_topology
    from lab.predict.matrix import lint

    try:
        contradictions = lint(load_topology(path))
    except TopologyError:
        return  # the run reports bad input itself
    for c in contradictions:
        err.print(f"[yellow]lint:[/yellow] {c.line()}", highlight=False)


def cmd_verify_matrix(args, out: Console, err: Console, progress) -> int:
    from lab import runner
    from lab.model.load import load_topology
    from lab.predict import live
    from lab.predict.render import print_live_matrix

    topology = load_topology(args.topology)
    report_dir = args.report or f"reports/{topology.name}-matrix"
    result, matrix = live.run_matrix(
        topology, report_dir, lambda t, d: runner.run(args.topology, d, kernel=args.kernel, on_progress=progress,
                                                      provider=args.provider, topology=t),
        services_option(args.services))
    print_live_matrix(matrix, topology, out)
    for e in result.errors:
        err.print(f"[red]lab run error:[/red] {e}", highlight=False)
    out.print(f"report: {report_dir}/report.html", highlight=False)
    if result.errors and not result.verdicts:
        return 3
    disagree = [r for r in matrix if not r.agrees or not r.holds]
    return 1 if disagree or result.errors else 0


def cmd_diff(args, out: Console, err: Console) -> int:
    from lab.progress import progress_printer as _progress_printer
    from lab.predict.diff import cmd_diff as run_diff

    return run_diff(args, out, err, _progress_printer(err))


def cmd_setup(args, out: Console, err: Console) -> int:
    from lab.system_setup import install

    return install(args.dry_run, lambda m: out.print(f"setup: {m}", highlight=False))
