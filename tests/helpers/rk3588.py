"""What Rockchip's drivers hold on an RK3588, held by one process on a mount's socket: buffers of
the rk_dma_heap CMA heap (one shown on the display), a system-heap frame, all three imported by an
MPP decoder session (attached to the core at its IOVA), a DRM PRIME export that keeps its scatter
list, memory taken without a dma-buf (rkisp), and the decoder core's load as its driver reports it."""
from __future__ import annotations

import subprocess
import sys

from memtrackfs.testing.helpers import Mount

DECODER = "fdc38100.rkvdec-core"
SESSION_KIB = (3 + 1 + 5) << 10   # what the session imported
RK_CMA_BYTES = (3 + 1) << 20      # the rk-dma-heap-cma dma-bufs
RKISP_BYTES = 512 << 10           # taken without a dma-buf

_PROGRAM = f"""
import os, sys
from memtrackfs.client import MemtrackClient
c = MemtrackClient(sys.argv[1])
camera = c.call("heap_alloc", heap="rk-dma-heap-cma", bytes=3 << 20, name="1234-camera")["buffer"]
isp = c.call("heap_alloc", heap="rk-dma-heap-cma", bytes=1 << 20)["buffer"]
frame = c.call("heap_alloc", heap="system", bytes=5 << 20)["buffer"]
c.call("map", attachment=c.call("attach", buffer=camera, device="fdd90000.vop")["attachment"])
prime = c.call("export", exporter="drm", heap="system", bytes=2 << 20, name="gpu", cache_sgt_mapping=True)["buffer"]
c.call("map", attachment=c.call("attach", buffer=prime, device="fdd90000.vop")["attachment"])
c.call("dma_alloc", heap="rk-dma-heap-cma", bytes={RKISP_BYTES}, name="rkisp")
session = c.call("mpp_session_open", pid=os.getpid(), tgid=os.getpid())["session"]
c.call("mpp_session_init", session=session, client_type=9)  # RKVDEC
c.call("mpp_import", session=session, buffers=[camera, isp, frame])
c.call("mpp_load", device="{DECODER}", load=4250, utilization=3900)
print("ok", flush=True)
sys.stdin.read()
"""


def hold_rk3588_state(mount: Mount) -> subprocess.Popen:
    """Start the holder; it keeps everything until its stdin closes (``release``)."""
    holder = subprocess.Popen([sys.executable, "-c", _PROGRAM, str(mount.socket)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "ok\n"
    return holder


def release(holder: subprocess.Popen) -> None:
    holder.stdin.close()
    holder.wait()
