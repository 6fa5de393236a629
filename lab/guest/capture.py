"""tcpdump on every lab network's bridge, so each flow is seen on every segment it crosses.

Runs inside the lab kernel. tcpdump puts the bridge in promiscuous mode, which makes the bridge
pass up a copy of every frame it forwards between its ports: one capture per network sees all
of that network's traffic.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time

from lab.guest.netns import inside, run_in

SNAPLEN = 512  # enough for headers and the start of a payload, where the markers are
# The end-of-capture frame: IEEE 802's local experimental EtherType, which no host's stack
# takes and the verdicts' reader skips (it reads IPv4 only).
END_ETHERTYPE = 0x88B5
END_TAG = b"ipsec-lab end of capture "


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


def end_frame(network: str, nonce: int) -> bytes:
    """A broadcast frame from a locally administered address, padded to Ethernet's 60 bytes."""
    frame = (b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + END_ETHERTYPE.to_bytes(2, "big")
             + END_TAG + f"{network} {nonce}".encode())
    return frame.ljust(60, b"\x00")


def drain(captures: list[Capture], switch_ns: str, timeout: float = 2.0) -> list[str]:
    """Put an end-of-capture frame on every bridge and wait until its tcpdump has written it.

    A bridge hands its frames to tcpdump's one packet socket in order, and tcpdump (-U) writes
    each as it reads it: once the end frame is in the file, so is every frame the bridge
    carried before it. This replaces a fixed pause before the captures stop, which a slow
    guest could outrun. The networks whose frame did not show within `timeout` are returned.
    """
    nonce = time.monotonic_ns()
    waiting: dict[Capture, tuple[bytes, int]] = {}
    with inside(switch_ns):
        for cap in captures:
            if cap.proc.poll() is not None:
                continue  # a capture that ended already has nothing more to write
            frame = end_frame(cap.network, nonce)
            try:
                with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
                    s.bind((cap.bridge, 0))
                    s.send(frame)
            except OSError:
                continue  # the bridge is gone: nothing more crosses it
            start = os.path.getsize(cap.path) if os.path.exists(cap.path) else 0
            waiting[cap] = (frame[14:], start)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for cap, (tag, start) in list(waiting.items()):
            with open(cap.path, "rb") as f:
                f.seek(max(0, start - len(tag)))
                if tag in f.read():
                    del waiting[cap]
        if waiting:
            time.sleep(0.01)
    return sorted(cap.network for cap in waiting)
