"""``vpu-sim play`` and ``vpu-sim encode`` on an RK3588 (dev/mpp_service): an MPP decode or
encode paced at the stream's frame rate, printing the same progress as the Amphion applications.

``memory usage`` is the bytes of the dma-bufs the session allocated (what MPP's
``mpp_buffer_total_now()`` reports); with ``--export-to DEVICE`` each decoded frame is shown on
that display controller (attached and mapped for it, the last few kept), as a DRM/KMS sink shows
MPP's frames.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional

from memtrackfs.client import MemtrackClient
from vpu_sim.apps.hold import hand_over
from vpu_sim.apps.m2m import Progress
from vpu_sim.apps.mpp.codec import DmaBufs, Display, MppDecoder, MppEncoder
from vpu_sim.apps.mpp.sizes import Stream

FPS = 30
NODE = "mpp_service"


def _paced(seconds: float, step: Callable[[], None], progress: Progress, usage: Callable[[], int]) -> int:
    """Run ``step`` FPS times a second for ``seconds``; the frames done."""
    frames = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        step()
        frames += 1
        progress.update(frames, usage())
        time.sleep(max(0.0, start + frames / FPS - time.monotonic()))
    progress.update(frames, usage(), final=True)
    return frames


def play(dev_dir: str, socket_path: str, codec: str, width: int, height: int, seconds: float, progress: Progress,
         display: Optional[str] = None, keep_exports: Optional[float] = None) -> int:
    """Decode for ``seconds``; with ``keep_exports`` (a bug on purpose), hand the frames still on
    the display to a helper that keeps them that long, attached to it."""
    with MemtrackClient(socket_path, client="") as client:
        bufs = DmaBufs(client)
        shown = Display(bufs, display) if display else None
        decoder = MppDecoder(os.path.join(dev_dir, NODE), bufs, Stream(codec, width, height), shown)
        try:
            frames = _paced(seconds, decoder.decode, progress, lambda: bufs.total)
            if shown is not None and keep_exports is not None:
                kept = shown.buffers()
                pid = hand_over(socket_path, kept, keep_exports, shown.device)
                progress.note("handed-over", f"handed {len(kept)} dma-bufs to helper pid {pid}, "
                                             f"which keeps them {keep_exports:g} s", helper=pid, buffers=len(kept))
        finally:
            decoder.close()
    return frames


def encode(dev_dir: str, socket_path: str, codec: str, width: int, height: int, seconds: float,
           progress: Progress) -> int:
    with MemtrackClient(socket_path, client="") as client:
        bufs = DmaBufs(client)
        encoder = MppEncoder(os.path.join(dev_dir, NODE), bufs, codec, width, height, FPS)
        try:
            return _paced(seconds, encoder.encode, progress, lambda: bufs.total)
        finally:
            encoder.close()
