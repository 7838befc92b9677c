"""A player's watchdog for the one stall with a known cause: the CMA heap is full.

After the sequence header the Amphion firmware asks for its MBI and DCP buffers; when
dma_alloc_coherent() cannot give them, vdec_alloc_fs() stops without a word (vdec.c) and the
firmware waits: VIDIOC_DQBUF blocks for good on a board (here until memtrackfs's
--driver-timeout, then ETIMEDOUT, which reads like a stuck firmware). Only mm/cma.c says why,
in the kernel log. So while a DQBUF has been blocked ``STALL_SECONDS``, the watch reads the log
for a cma_alloc failure since the player opened the device; on one, it turns CAPTURE streaming off (vb2
wakes a blocked DQBUF when streaming stops, as a player's watchdog would do it) and the player
fails at once with ENOMEM, quoting the log. Works the same on a board's /dev/kmsg.
"""
from __future__ import annotations

import errno
import re
import threading
import time
from typing import Optional

from memtrackfs.tools.kmsg import read_kmsg
from vpu_sim.apps.v4l2 import CAPTURE, Dequeued, V4l2Device

STALL_SECONDS = 1.0     # a DQBUF blocked this long (30 frames at 30 fps) is a stall worth a look
_CHECK_EVERY = 0.25
_CMA_FAILURE = re.compile(r"cma_alloc: \S+: alloc failed, req-size: \d+ pages, ret: -12")


class CmaStallWatch:
    def __init__(self, dev: V4l2Device, kmsg_path: str) -> None:
        self.dev = dev
        self.kmsg_path = kmsg_path
        self.cause: Optional[str] = None  # the kernel log's cma_alloc failure, once found
        self._blocked_since: Optional[float] = None
        self._stop = threading.Event()
        self._after = self._last_seq()
        self._thread: Optional[threading.Thread] = None
        if self._after is not None:  # no readable kernel log: nothing to watch with
            self._thread = threading.Thread(target=self._watch, name="cma-stall-watch", daemon=True)
            self._thread.start()

    def _last_seq(self) -> Optional[int]:
        try:
            return max((record.seq for record in read_kmsg(self.kmsg_path)), default=-1)
        except (OSError, ValueError):
            return None

    def _failure(self) -> Optional[str]:
        try:
            records = read_kmsg(self.kmsg_path)
        except (OSError, ValueError):
            return None
        assert self._after is not None
        return next((r.message for r in records if r.seq > self._after and _CMA_FAILURE.search(r.message)), None)

    def _watch(self) -> None:
        while not self._stop.wait(_CHECK_EVERY):
            since = self._blocked_since
            if since is None or time.monotonic() - since < STALL_SECONDS:
                continue
            self.cause = self._failure()
            if self.cause is not None:
                try:
                    self.dev.stream_off(CAPTURE)  # wakes the blocked DQBUF
                except OSError:
                    pass
                return

    def dequeue(self, buf_type: int) -> Dequeued:
        self._blocked_since = time.monotonic()
        try:
            return self.dev.dequeue(buf_type)
        except OSError as exc:
            if self.cause is None:
                raise
            raise OSError(errno.ENOMEM, f"VIDIOC_DQBUF: no frame: the decoder waits for memory the CMA heap "
                                        f"cannot give (kernel log: {self.cause})") from exc
        finally:
            self._blocked_since = None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "CmaStallWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
