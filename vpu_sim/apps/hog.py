"""The ``cma-exhaustion`` fault: a third party that fills a CMA heap, holds it, then frees it.

It allocates dma-bufs from the heap (``heap_alloc``, as DMA_HEAP_IOCTL_ALLOC does), each the
largest free range, until nothing is left, so that meanwhile every allocation from the heap
fails with ENOMEM: a decoder's REQBUFS or STREAMON, or its firmware's MBI/DCP requests. Closing
its connection frees it all, as a process's fds close when it exits.
"""
from __future__ import annotations

import errno
from typing import Optional

from memtrackfs.client import MemtrackClient, MemtrackError

BUFFER_NAME = "cma-hog"  # how its buffers show in rk_dmabuf/dev and bufinfo


class CmaHog:
    def __init__(self, socket_path: str, heap: Optional[str] = None) -> None:
        self.client = MemtrackClient(socket_path, client="vpu-sim cma-hog")
        cma = [h for h in self.client.call("heaps")["heaps"] if h["kind"] == "cma"]
        chosen = [h for h in cma if heap is None or h["name"] == heap]
        if not chosen:
            self.client.close()
            names = ", ".join(h["name"] for h in cma) or "none"
            raise OSError(errno.ENOENT, f"no CMA heap {heap or ''} to exhaust on this mount (CMA heaps: {names})")
        self.heap = chosen[0]["name"]
        self.held = 0

    def _largest_free(self) -> int:
        return next(h["largest_free"] for h in self.client.call("heaps")["heaps"] if h["name"] == self.heap)

    def fill(self) -> int:
        """Take every free range of the heap; returns the bytes held."""
        while (largest := self._largest_free()) > 0:
            try:
                self.held += self.client.call("heap_alloc", heap=self.heap, bytes=largest, name=BUFFER_NAME)["size"]
            except MemtrackError as exc:
                if exc.errno != errno.ENOMEM:
                    raise
                # Someone took part of that range meanwhile: look again.
        return self.held

    def release(self) -> None:
        self.client.close()
        self.held = 0
