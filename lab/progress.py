"""Progress events (the executor's `@@lab` lines, the runner's phases) as one line each on a console.

Its own module so that every command that runs a lab (lab verify, lab diff) shows the same lines
without importing the command-line module.
"""

from __future__ import annotations

import time


def progress_printer(console):
    """A callback for `on_progress`: seconds since the start, the phase, the message."""
    t0 = time.monotonic()

    def show(event: dict) -> None:
        console.print(f"[dim]{time.monotonic() - t0:6.1f}s[/dim]  [cyan]{event.get('phase', ''):<9}[/cyan] "
                      f"{event.get('message', '')}", highlight=False)
    return show
