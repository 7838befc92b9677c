"""What a device node's mmap()ed buffers hold: the pages the page cache wrote back.

A V4L2 client maps each buffer plane of its open file at the offset QUERYBUF gave
(``mmap(MAP_SHARED, fd, m.mem_offset)``). On FUSE such a mapping is the node's page cache: a
touch of a page not cached reads it from the daemon, a store reaches the daemon only when the
kernel writes the dirty page back (msync, munmap, writeback, memory pressure). The cache is per
inode, so every open of one node shares it, whichever open made the mapping. This model mirrors
that: one store per node, keyed by page offset, holding only pages written back into a region
some open file of the node declared mappable (its driver says which: the buffers it allocated).

Costs: a mapping costs nothing here; a page costs 4 KiB only once written back with data that is
not all zeros, and it is freed when no open file's regions cover it any more (REQBUFS(0),
release). So the store never holds more than the buffers the driver allocated, and nothing at
all for buffers that are only read (a decoder's CAPTURE buffers read as zeros).

Guarded by its own lock, a leaf lock (README "Locking").
"""
from __future__ import annotations

import bisect
import errno
import threading
from typing import Iterable, Sequence

from memtrackfs.errors import KernelError
from memtrackfs.model.heaps import PAGE_SIZE

ZERO_PAGE = bytes(PAGE_SIZE)
# The device file's size as stat reports it: it must cover every offset a driver hands out (a
# page past i_size cannot be mapped), and V4L2 mem2mem offsets are 32-bit (CAPTURE from 1 GiB).
MAPPABLE_SIZE = 1 << 40
MAX_REGIONS = 1024  # per open file: 2 queues x 32 buffers x 8 planes is 512

Region = tuple[int, int]  # (offset, length), both page-aligned


def check_regions(regions: Sequence[Sequence[int]]) -> list[Region]:
    """A driver's list of mappable (offset, length) pairs, validated; KernelError(EINVAL) if not."""
    if len(regions) > MAX_REGIONS:
        raise KernelError(errno.EINVAL, f"at most {MAX_REGIONS} mappable regions per file, not {len(regions)}")
    checked = []
    for region in regions:
        if (not isinstance(region, (list, tuple)) or len(region) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in region)):
            raise KernelError(errno.EINVAL, f"a mappable region is [offset, length] in bytes, not {region!r}")
        offset, length = region
        if offset < 0 or length <= 0 or offset % PAGE_SIZE or length % PAGE_SIZE or offset + length > MAPPABLE_SIZE:
            raise KernelError(errno.EINVAL, f"mappable region {region!r} must be page-aligned, non-empty and "
                                            f"below {MAPPABLE_SIZE:#x}")
        checked.append((offset, length))
    return checked


class BufferMemory:
    """The page store of one device node, shared by all its open files as the page cache is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._regions: dict[int, list[Region]] = {}  # open file -> its mappable regions
        self._starts: list[int] = []                 # the union of all regions, merged and sorted
        self._ends: list[int] = []
        self._pages: dict[int, bytes] = {}           # page offset -> the page's bytes (never all zeros)

    def _covered(self, offset: int) -> bool:
        index = bisect.bisect_right(self._starts, offset) - 1
        return index >= 0 and offset < self._ends[index]

    def _merge(self) -> None:
        self._starts, self._ends = [], []
        for start, length in sorted(r for regions in self._regions.values() for r in regions):
            if self._ends and start <= self._ends[-1]:
                self._ends[-1] = max(self._ends[-1], start + length)
            else:
                self._starts.append(start)
                self._ends.append(start + length)

    def _collect(self) -> None:
        """After the regions changed: drop every stored page no region covers any more."""
        self._merge()
        for offset in [offset for offset in self._pages if not self._covered(offset)]:
            del self._pages[offset]

    def set_regions(self, file: int, regions: Iterable[Region]) -> None:
        with self._lock:
            self._regions[file] = list(regions)
            self._collect()

    def release(self, file: int) -> None:
        with self._lock:
            if self._regions.pop(file, None):
                self._collect()

    def read(self, offset: int, size: int) -> bytes:
        """A page-cache fill: ``size`` bytes from ``offset``, zeros where nothing was written.

        Never short: FUSE takes a short read of a cached file as its end and shrinks it.
        An offset outside every buffer is EINVAL (a touch there is a SIGBUS), as is a read()
        of a V4L2 node that maps nothing.
        """
        with self._lock:
            if not self._covered(offset):
                raise KernelError(errno.EINVAL, f"offset {offset:#x} is in no mapped buffer of this device")
            first = offset - offset % PAGE_SIZE
            data = b"".join(self._pages.get(page, ZERO_PAGE) for page in range(first, offset + size, PAGE_SIZE))
        start = offset - first
        return data[start:start + size]

    def write_back(self, offset: int, data: bytes) -> None:
        """Dirty pages the kernel writes back: kept where a region covers them, dropped elsewhere
        (a buffer freed while still mapped, which V4L2 allows: its pages go with the mapping)."""
        with self._lock:
            position = 0
            while position < len(data):
                at = offset + position
                page = at - at % PAGE_SIZE
                start = at - page
                chunk = data[position:position + PAGE_SIZE - start]
                position += len(chunk)
                if not self._covered(page):
                    continue
                if start or len(chunk) < PAGE_SIZE:
                    old = self._pages.get(page, ZERO_PAGE)
                    chunk = old[:start] + chunk + old[start + len(chunk):]
                if chunk == ZERO_PAGE:
                    self._pages.pop(page, None)
                else:
                    self._pages[page] = chunk
