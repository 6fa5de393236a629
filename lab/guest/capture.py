"""tcpdump on every lab network's bridge, so each flow is seen on every segment it crosses.

Runs inside the lab kernel. tcpdump puts the bridge in promiscuous mode, which makes the bridge
pass up a copy of every frame it forwards between its ports: one capture per network sees all
of that network's traffic.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

from lab.guest.netns import run_in

SNAPLEN = 512  # enough for headers and the start of a payload, where the markers are


class Capture:
    def __init__(self, switch_ns: str, network: dict, outdir: str):
        self.network = network["name"]
        self.bridge = network["bridge"]
        self.path = os.path.join(outdir, f"{self.network}.pcap")
        argv = run_in(switch_ns, "tcpdump", "-i", self.bridge, "-n", "-U", "--immediate-mode",
                      "-s", str(SNAPLEN), "-Z", "root", "-w", self.path)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

    def wait_ready(self, deadline: float) -> None:
        """tcpdump says `listening on` once the capture is open; no packet is missed after."""
        buf = b""
        while b"listening on" not in buf:
            left = deadline - time.monotonic()
            if self.proc.poll() is not None or left <= 0:
                raise RuntimeError(f"tcpdump on {self.network} did not start: {buf.decode(errors='replace').strip()}")
            ready, _, _ = select.select([self.proc.stderr], [], [], left)
            if ready:
                buf += os.read(self.proc.stderr.fileno(), 4096)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def reap(self, grace: float) -> None:
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()
