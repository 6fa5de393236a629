"""`lab diff OLD NEW`: which flows a change to a design changes.

Both versions run as whole matrices (lab verify --matrix; `--static` compares predictions only,
nothing started), and only the flows whose result differs are printed, e.g.
`fe -> be imap: esp -> clear`. A flow in one version only is `absent` in the other. OLD may be
a git revision of NEW's file (`--base REF`).
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError
from lab.model.topology import Result, Topology
from lab.verdicts.model import Observed


@dataclass(frozen=True)
class Change:
    id: str
    source: str
    destination: str
    service: str
    old: Observed | None  # None: the flow is absent from that version
    new: Observed | None
    covered: bool  # NEW's written expectations name this flow

    @property
    def before(self) -> str:
        return "absent" if self.old is None else str(self.old)

    @property
    def after(self) -> str:
        return "absent" if self.new is None else str(self.new)

    def line(self) -> str:
        return f"{self.source} -> {self.destination} {self.service}: {self.before} -> {self.after}"


def file_at(ref: str, path: str, workdir: str) -> str:
    """NEW's file as it was at a git revision, written to a temporary file of the same name."""
    repo = subprocess.run(["git", "-C", str(Path(path).resolve().parent), "rev-parse", "--show-toplevel"],
                          capture_output=True, text=True)
    if repo.returncode:
        raise LabError(f"--base: {path} is not in a git repository")
    rel = Path(path).resolve().relative_to(repo.stdout.strip())
    shown = subprocess.run(["git", "-C", repo.stdout.strip(), "show", f"{ref}:{rel.as_posix()}"],
                           capture_output=True, text=True)
    if shown.returncode:
        raise LabError(f"--base: {ref}:{rel} not found: {shown.stderr.strip().splitlines()[-1] if shown.stderr else ''}")
    out = Path(workdir, ref.replace("/", "_"), Path(path).name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(shown.stdout)
    return str(out)


Results = dict[str, tuple[str, str, str, Observed]]


def changes(old: Results, new: Results, new_topology: Topology) -> list[Change]:
    """old/new: flow id -> (source, destination, service, result). Only what differs, in NEW's
    order, then flows NEW no longer has."""
    written = {e.id for e in new_topology.expectations}
    out = []
    for fid in list(new) + [f for f in old if f not in new]:
        a, b = old.get(fid), new.get(fid)
        before, after = a[3] if a else None, b[3] if b else None
        if before != after:
            src, dst, svc = (b or a)[:3]
            out.append(Change(fid, src, dst, svc, before, after, fid in written))
    return out


def markdown(changes_: list[Change], old_name: str, new_name: str, static: bool, counts: tuple[int, int]) -> str:
    how = "predicted from the model (nothing run)" if static else "observed on the wire (both run as whole matrices)"
    lines = [f"### IPsec design change: `{old_name}` -> `{new_name}`", "",
             f"Flows compared: {counts[0]} before, {counts[1]} after; results {how}.", ""]
    if not changes_:
        lines.append("No flow changed.")
        return "\n".join(lines) + "\n"
    lines += ["| flow | before | after | written in NEW |", "|---|---|---|---|"]
    for c in changes_:
        lines.append(f"| `{c.source} -> {c.destination} {c.service}` | {c.before} | {c.after} | "
                     f"{'yes' if c.covered else '**no**'} |")
    uncovered = [c for c in changes_ if not c.covered]
    if uncovered:
        lines += ["", f"{len(uncovered)} changed flow(s) have no written expectation in `{new_name}`."]
    return "\n".join(lines) + "\n"


def side(path: str, static: bool, report_dir: str, args, progress) -> tuple[Topology, dict, object]:
    """One version's results: flow id -> (source, destination, service, result), and its run."""
    from lab.model.load import load_topology
    from lab.predict import live
    from lab.predict.matrix import predict_matrix

    topology = load_topology(path)
    if static:  # the prediction stands in for the observation
        rows = [live.MatrixRow(p.id, p.flow.source, p.flow.destination, p.flow.service.name, None,
                               Result(p.result), Result(p.result), p.reason, "predicted")
                for p in predict_matrix(topology)]
        return topology, {r.id: (r.source, r.destination, r.service, r.observed) for r in rows}, rows
    from lab import runner

    result, rows = live.run_matrix(topology, report_dir, lambda t, d: runner.run(
        path, d, kernel=args.kernel, on_progress=progress, provider=args.provider, topology=t))
    if result.errors and not result.verdicts:
        raise LabError(f"{path}: the lab could not run: {'; '.join(result.errors)}")
    return topology, {r.id: (r.source, r.destination, r.service, r.observed) for r in rows}, rows


def cmd_diff(args, out, err, progress) -> int:
    if args.base:
        if len(args.files) != 1:
            raise LabError("--base REF takes one file (NEW); OLD is that file at REF")
        tmp = tempfile.TemporaryDirectory(prefix="lab-diff-")
        old_path, new_path = file_at(args.base, args.files[0], tmp.name), args.files[0]
        old_name = f"{args.base}:{args.files[0]}"
    else:
        if len(args.files) != 2:
            raise LabError("lab diff OLD NEW, or lab diff --base REF FILE")
        old_path, new_path = args.files
        old_name = old_path
    report = Path(args.report or f"reports/diff-{Path(new_path).stem}")
    old_t, old, old_rows = side(old_path, args.static, str(report / "old"), args, progress)
    new_t, new, new_rows = side(new_path, args.static, str(report / "new"), args, progress)
    found = changes(old, new, new_t)
    for c in found:
        mark = "" if c.covered else "   (not covered by NEW's expectations)"
        out.print(c.line() + mark, highlight=False, markup=False)
    how = "predicted" if args.static else "observed"
    err.print(f"{len(found)} of {len(new)} flows changed ({how}); old {len(old)} flows", highlight=False)
    if args.markdown:
        Path(args.markdown).write_text(markdown(found, old_name, new_path, args.static, (len(old), len(new))))
        err.print(f"markdown: {args.markdown}", highlight=False)
    from lab.report.picture import write_diff_page
    page = write_diff_page(new_t, new_rows, found, report / "diff.html", static=args.static)
    err.print(f"picture: {page}", highlight=False)
    disagreements = [r.id for rows in (old_rows or [], new_rows or []) for r in rows if not r.agrees]
    for fid in disagreements:
        err.print(f"[red]prediction and observation differ:[/red] {fid}", highlight=False)
    if args.fail_uncovered and any(not c.covered for c in found):
        return 1
    return 1 if disagreements else 0
