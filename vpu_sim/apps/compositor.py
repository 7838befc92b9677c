"""``vpu-sim compositor``: a display server at its home screen, holding its UI and framebuffer
dma-bufs attached to the display controller, as a board idles with its launcher shown.

It allocates each layer's buffers from the ``system`` heap (as Android's gralloc allocator
service does on Rockchip), attaches and maps them for the display, says so on one line and
keeps them until SIGTERM/SIGINT, ``--seconds`` or the mount's end. It names itself
``allocator@4.0-s`` (PR_SET_NAME; what ``android.hardware.graphics.allocator@4.0-service``'s
comm is), so its buffers read ``<tgid>-allocator@4.`` in rk_dmabuf's 16 columns, as in
Rockchip's DMABUF guide.

The home screen is 1920x1080 ARGB8888: three framebuffer targets, three launcher buffers, the
wallpaper and the notification shade (8100 KiB each), a navigation bar (1920x96, 720 KiB) and a
double-buffered 64x64 pointer (16 KiB each): 65552 KiB, the guide's idle figure. The guide does
not list its buffers; this set is chosen to land on that figure with buffers a 1080p UI has.
"""
from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from typing import Optional, TextIO

from memtrackfs.client import MemtrackClient
from memtrackfs.driverkit import stay

COMPOSITING = "compositing "   # the first line, once the buffers are on the display
ALLOCATOR_COMM = "allocator@4.0-s"
PR_SET_NAME = 15


@dataclass(frozen=True)
class Layer:
    name: str
    width: int
    height: int
    count: int
    bytes_per_pixel: int = 4

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.bytes_per_pixel


HOME_SCREEN = (Layer("framebuffer-target", 1920, 1080, 3), Layer("launcher", 1920, 1080, 3),
               Layer("wallpaper", 1920, 1080, 1), Layer("notification-shade", 1920, 1080, 1),
               Layer("navigation-bar", 1920, 96, 1), Layer("pointer", 64, 64, 2))


def set_comm(name: str) -> None:
    """prctl(PR_SET_NAME): this thread's command name (the main thread's names the process)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def compositor(socket_path: str, display: str, seconds: Optional[float], comm: str = ALLOCATOR_COMM,
               layers: tuple[Layer, ...] = HOME_SCREEN, out: TextIO = sys.stdout) -> int:
    set_comm(comm)
    with MemtrackClient(socket_path, client="") as client:
        total = count = 0
        for layer in layers:
            for _ in range(layer.count):
                reply = client.call("heap_alloc", heap="system", bytes=layer.nbytes)
                attachment = client.call("attach", buffer=reply["buffer"], device=display)["attachment"]
                client.call("map", attachment=attachment)
                total += reply["size"]
                count += 1
        out.write(f"{COMPOSITING}{count} dma-bufs, {total >> 10} KiB, on {display}\n")
        out.flush()
        stay(client, seconds)
    return 0
