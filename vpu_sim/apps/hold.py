"""``vpu-sim hold``: keep dma-bufs referenced for a while, as a leaky compositor does.

It takes one reference on each buffer (as receiving its fd does), says so on one line, and
keeps them for the given seconds, or until SIGTERM/SIGINT or until the mount goes away; its
references go when its connection closes, like a dead process's fds. The ``keep-dmabufs`` fault
hands a player's exported frames to it, so ``rk_dmabuf/size`` stays up after the player is done.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Sequence, TextIO

from memtrackfs.client import MemtrackClient
from vpu_sim.apps.m2m import HOLDING


def hold(socket_path: str, buffers: Sequence[int], seconds: float, out: TextIO = sys.stdout) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with MemtrackClient(socket_path, client="vpu-sim hold") as client:
        for buffer in buffers:
            client.call("get", buffer=buffer)
        # The only line: whoever started this helper reads it and then stops listening.
        out.write(f"{HOLDING}{len(buffers)} dma-bufs for {seconds:g} s\n")
        out.flush()
        deadline = time.monotonic() + seconds
        while not client.closed.is_set() and not stop.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                break
    return 0
