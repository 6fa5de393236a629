"""One page over many reports: each topology's result, linking its own report (conformance)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).parent / "templates"


def write_index(rows: list[dict], path: str, title: str = "IPsec policy lab: conformance") -> str:
    """rows: {"name", "description", "held", "total", "ok", "link", "failed": [str], "kind"}."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    html = env.get_template("index.html").render(title=title, rows=rows,
                                                 ok=all(r["ok"] for r in rows), count=len(rows))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(html)
    return path
