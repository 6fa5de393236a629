"""The topology picture: Graphviz lays it out, the SVG is inline with no outside assets, and a
real headless browser draws it (screenshot checked for the verdict colours)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lab.model.load import load_topology
from lab.predict.matrix import predict_matrix
from lab.report.picture import COLOURS, Arrow, dot_source, render_svg, write_diff_page

ROOT = Path(__file__).resolve().parent.parent


def _arrows(name):
    t = load_topology(ROOT / "topologies" / f"{name}.yaml")
    return t, [Arrow(p.flow.source, p.flow.destination, p.flow.service.name, p.result) for p in predict_matrix(t)]


def test_dot_source_draws_networks_roles_firewall_vip_and_verdicts():
    t, arrows = _arrows("exchange-cluster-failover")
    dot = dot_source(t, arrows + [Arrow("fe", "mbx", "imap", "dropped", failed=True)])
    assert '"net:dmz"' in dot and "shape=octagon" in dot  # a network, the firewall
    assert '"mbx" [label="mbx VIP' in dot  # the cluster's VIP
    assert f'"fe" -> "mbx" [color="{COLOURS["esp"]}"' in dot
    assert "imap ✗" in dot and "arrowhead=tee" in dot  # a failed, dropped flow


def test_svg_is_inline_and_self_contained():
    t, arrows = _arrows("kb821839-b")
    svg = render_svg(dot_source(t, arrows))
    assert svg.startswith("<svg") and "<?xml" not in svg
    assert "<image" not in svg and "href=\"http" not in svg  # nothing fetched


def _chromium() -> str:
    path = shutil.which("chromium")
    assert path, "chromium is missing: `make browser` installs it for this test"
    return path


def test_screenshot_in_a_headless_browser(tmp_path):
    from PIL import Image

    t, arrows = _arrows("kb821839-b")
    page = tmp_path / "diff.html"
    changed = [a for a in arrows if (a.source, a.destination, a.label) == ("fe", "be", "http")]
    write_diff_page(t, [_Row(a) for a in arrows], [_Change("fe->be:http")], page)
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,1000", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    img = Image.open(shot).convert("RGB")
    colours = {c for _, c in img.getcolors(maxcolors=1 << 24)}
    assert changed and len(colours) > 50  # a drawn picture, not a blank page

    def seen(hex_colour):
        want = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        return any(all(abs(a - b) < 12 for a, b in zip(c, want)) for c in colours)
    assert seen(COLOURS["esp"]) and seen(COLOURS["clear"])  # the ESP and the clear arrows


class _Row:
    def __init__(self, a: Arrow):
        self.id = f"{a.source}->{a.destination}:{a.label}"
        self.source, self.destination, self.service, self.observed, self.agrees = a.source, a.destination, a.label, a.verdict, True


class _Change:
    def __init__(self, fid):
        self.id, self.covered = fid, True

    def line(self):
        return "fe -> be http: clear -> esp"
