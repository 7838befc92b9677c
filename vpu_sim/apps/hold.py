"""``vpu-sim hold``: keep dma-bufs referenced for a while, as a leaky compositor does.

It takes one reference on each buffer (as receiving its fd does), with ``--device`` also
attaches and maps each for that display (as a compositor that keeps them on a plane), says so
on one line, and keeps them for the given seconds, or until SIGTERM/SIGINT or until the mount
goes away; its references go when its connection closes, like a dead process's fds. The
``keep-dmabufs`` fault hands a player's exported or shown frames to it, so ``rk_dmabuf/size``
stays up after the player is done.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional, Sequence, TextIO

from memtrackfs.client import MemtrackClient
from memtrackfs.driverkit import stay

HOLDING = "holding "  # the first line of ``vpu-sim hold`` once it holds the buffers


def hold(socket_path: str, buffers: Sequence[int], seconds: float, device: Optional[str] = None,
         out: TextIO = sys.stdout) -> int:
    with MemtrackClient(socket_path, client="vpu-sim hold") as client:
        for buffer in buffers:
            client.call("get", buffer=buffer)
            if device is not None:
                client.call("map", attachment=client.call("attach", buffer=buffer, device=device)["attachment"])
        # The only line: whoever started this helper reads it and then stops listening.
        out.write(f"{HOLDING}{len(buffers)} dma-bufs for {seconds:g} s\n")
        out.flush()
        stay(client, seconds)
    return 0


def hand_over(socket_path: str, buffers: Sequence[int], seconds: float, device: Optional[str] = None) -> int:
    """The keep-dmabufs bug: pass the buffers to a helper (``vpu-sim hold``) that keeps them
    ``seconds`` after the application is done with them. Returns the helper's pid.

    The helper is a session of its own, with no inherited output, so it outlives the
    application and whoever waits for the application's output.
    """
    command = [sys.executable, "-m", "vpu_sim", "hold", "--seconds", str(seconds)]
    command += ["--device", device] if device is not None else []
    helper = subprocess.Popen(command + [str(buffer) for buffer in buffers],
                              env={**os.environ, "MEMTRACKFS_SOCKET": socket_path},
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    assert helper.stdout is not None
    line = helper.stdout.readline()
    helper.stdout.close()
    if not line.startswith(HOLDING):
        helper.wait()
        raise OSError(f"vpu-sim hold failed: {line.strip() or f'exit status {helper.returncode}'}")
    return helper.pid
