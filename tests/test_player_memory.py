"""A decode that the CMA heap starves: the player says ENOMEM at once, quoting the kernel log,
instead of a DQBUF that times out like a stuck firmware."""
from __future__ import annotations

import subprocess
import sys
import time

from memtrackfs.testing.helpers import Mount

# A player's start, step by step (vpu_sim.apps.v4l2 as vpu-sim play uses it), with its
# CmaStallWatch: OUTPUT streaming with every buffer queued (the firmware then asks for its MBI
# and DCP buffers), a pause for the test, then CAPTURE, and a DQBUF through the watch.
CLIENT = r"""
import os, sys, time
from vpu_sim import uapi
from vpu_sim.apps.stall import CmaStallWatch
from vpu_sim.apps.v4l2 import CAPTURE, OUTPUT, V4l2Device
mnt = sys.argv[1]
with V4l2Device(os.path.join(mnt, "dev/video0")) as dev, CmaStallWatch(dev, os.path.join(mnt, "dev/kmsg")) as watch:
    dev.set_format(OUTPUT, uapi.V4L2_PIX_FMT_H264, 1920, 1080)
    for index in range(dev.request_buffers(OUTPUT, 8)):
        dev.queue(OUTPUT, index, [1000])
    dev.stream_on(OUTPUT)
    print("header", flush=True)
    sys.stdin.readline()
    dev.get_format(CAPTURE)  # the stream's, now that the header is parsed
    captures = dev.request_buffers(CAPTURE, 32)
    for index in range(captures):
        dev.queue(CAPTURE, index)
    dev.stream_on(CAPTURE)
    started = time.monotonic()
    try:
        watch.dequeue(CAPTURE)
        print("frame")
    except OSError as exc:
        print(f"{time.monotonic() - started:.1f} {exc.errno} {exc.strerror}")
"""

OUTPUT_BYTES = 2076672  # one 1080p H.264 OUTPUT buffer (docs/spec/amphion-model.md)
RING, UDATA = 12 << 20, 4096


def test_a_decode_the_cma_heap_starves_fails_with_enomem_at_once(memtrackfs_factory) -> None:
    board: Mount = memtrackfs_factory(board="imx8qxp", heaps=["system", "cma=128M"], driver_timeout=10)
    with board.client(client="test hog") as hog:
        def free() -> int:
            return next(h["free"] for h in hog.call("heaps")["heaps"] if h["kind"] == "cma")
        # Low in the heap, a hole for CAPTURE later; the rest taken but for what the decoder's
        # OUTPUT side needs: its firmware's MBI and DCP requests find nothing.
        hole = hog.call("dma_alloc", bytes=64 << 20)["allocation"]
        hog.call("dma_alloc", bytes=free() - (8 * OUTPUT_BYTES + RING + UDATA))
        client = subprocess.Popen([sys.executable, "-c", CLIENT, str(board.path)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert client.stdout.readline() == "header\n", client.stderr.read()
        hog.call("dma_free", allocation=hole)  # CAPTURE buffers fill it; the MBI/DCP stay unmet
        client.stdin.write("go\n")
        client.stdin.flush()
        out, err = client.communicate(timeout=30)
    took, code, message = out.split(" ", 2)
    assert (int(code), err) == (12, ""), out + err  # ENOMEM
    assert float(took) < 3, out  # about STALL_SECONDS, not the 10 s driver timeout
    assert message.startswith("VIDIOC_DQBUF: no frame: the decoder waits for memory the CMA heap cannot give "
                              "(kernel log: cma: cma_alloc: cma: alloc failed, req-size: "), message


def test_a_player_given_fewer_capture_buffers_than_it_asked_drains_to_the_end(memtrackfs_factory) -> None:
    """With a 64 MiB CMA heap REQBUFS gives fewer CAPTURE buffers (still the decoder's minimum);
    the drain must queue them back for the frames still in flight, or the LAST buffer never comes."""
    board: Mount = memtrackfs_factory(board="imx8qxp", heaps=["system", "cma=64M"], driver_timeout=3)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "vpu_sim", "play", "--mount", str(board.path), "--seconds", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 3 + 1  # no DQBUF waited for the driver timeout
    assert any("cma: cma_alloc: cma: alloc failed" in line for line in board.kmsg())  # it did run short
