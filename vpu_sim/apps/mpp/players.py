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
from vpu_sim.apps.mpp.codec import Display, DmaBufs, MppDecoder, MppEncoder
from vpu_sim.apps.mpp.sizes import Stream, frame_count

FPS = 30
NODE = "mpp_service"


def _paced(seconds: float, step: Callable[[], None], progress: Progress, usage: Callable[[], int],
           before: int = 0, last: bool = True) -> int:
    """Run ``step`` FPS times a second for ``seconds``; the frames done (``before``: frames
    reported already; ``last``: the final report follows)."""
    frames = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        step()
        frames += 1
        progress.update(before + frames, usage())
        time.sleep(max(0.0, start + frames / FPS - time.monotonic()))
    if last:
        progress.update(before + frames, usage(), final=True)
    return frames


def play(dev_dir: str, socket_path: str, codec: str, width: int, height: int, seconds: float, progress: Progress,
         display: Optional[str] = None, keep_exports: Optional[float] = None, playlist: int = 1) -> int:
    """Decode ``playlist`` videos of ``seconds`` each, gaplessly: the next video's decoder is
    opened and prerolled (it decodes as many frames as its frame group holds) before the
    previous one is closed, as players that prepare the next item do. With ``keep_exports`` (a
    bug on purpose), the frames still on the display at the end go to a helper that keeps them
    that long, attached to the display."""
    path, stream = os.path.join(dev_dir, NODE), Stream(codec, width, height)
    with MemtrackClient(socket_path, client="") as client:
        bufs = DmaBufs(client)
        decoder: Optional[MppDecoder] = None
        frames = 0
        try:
            for video in range(playlist):
                following = MppDecoder(path, bufs, stream, Display(bufs, display) if display else None)
                if decoder is not None:
                    for _ in range(frame_count(stream)):
                        following.decode()
                    frames += frame_count(stream)
                    progress.note("next-video", f"video {video + 1} of {playlist}", video=video + 1)
                    decoder.close()
                decoder = following
                frames += _paced(seconds, decoder.decode, progress, lambda: bufs.total, frames, video == playlist - 1)
            assert decoder is not None
            if decoder.display is not None and keep_exports is not None:
                kept = decoder.display.buffers()
                pid = hand_over(socket_path, kept, keep_exports, decoder.display.device)
                progress.note("handed-over", f"handed {len(kept)} dma-bufs to helper pid {pid}, "
                                             f"which keeps them {keep_exports:g} s", helper=pid, buffers=len(kept))
        finally:
            if decoder is not None:
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
