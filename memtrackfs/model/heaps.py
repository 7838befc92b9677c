"""DMA-BUF heaps: where a dma-buf's memory comes from, and the DMA addresses devices see.

- ``SystemHeap`` hands out page-scattered memory as drivers/dma-buf/heaps/system_heap.c does:
  the largest chunks first (1 MiB, 64 KiB, then 4 KiB pages), each chunk somewhere else in RAM,
  so a buffer's scatter list has several segments. Freed chunks are reused first, as the page
  allocator's free lists do.
- ``CmaHeap`` is a fixed, physically contiguous area (mm/cma.c): a page bitmap, first-fit runs of
  free pages, and ENOMEM when no run is long enough, even if enough pages are free in total.

The emulated board maps devices without an IOMMU, so a DMA address is the physical address.
Pure model: no locks, no I/O. The owner (``Kernel``) serialises every call.
"""
from __future__ import annotations

import errno
import re
from typing import Callable, NamedTuple, Optional, Sequence

from memtrackfs.errors import KernelError
from memtrackfs.model.kmsg import KernelLog

PAGE_SIZE = 4096
MAX_BUFFER_BYTES = 1 << 40  # larger requests are refused as absurd before any heap is asked
MAX_HEAP_BYTES = 64 << 30   # a board's RAM, at most
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# CMA areas live below 4 GiB (ZONE_DMA32) as boards place them; the system heap's RAM above.
CMA_ZONE_START, CMA_ZONE_END = 0x1000_0000, 0x1_0000_0000
CMA_AREA_ALIGN = 4 * MiB
SYSTEM_RAM_BASE = 0x1_0000_0000
_KERN_ERR = 3

_HEAP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9,._-]{0,63}")
_SIZE = re.compile(r"([0-9]+)([KMG]?)", re.IGNORECASE)
_UNITS = {"": 1, "K": KiB, "M": MiB, "G": GiB}


def page_align(nbytes: int) -> int:
    return (nbytes + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def format_bytes(nbytes: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} bytes"


class Segment(NamedTuple):
    """One scatter-list entry: a DMA address and a length in bytes."""

    address: int
    length: int


class Allocation:
    """Memory a heap handed out for one buffer: its segments, and how to give it back."""

    __slots__ = ("segments", "size", "release")

    def __init__(self, segments: Sequence[Segment], release: Callable[[], None]) -> None:
        self.segments = tuple(segments)
        self.size = sum(segment.length for segment in self.segments)
        self.release = release


class Heap:
    """A DMA-BUF heap of fixed capacity; buffers exported from it carry its name as exporter.

    ``caches_sgt``: its dma_buf_ops set ``cache_sgt_mapping``, so an attachment keeps the scatter
    list it mapped (``attach->sgt``), which Rockchip's ``rk_dmabuf/sgt`` prints. ``rockchip``: it
    belongs to Rockchip's rk_dma_heap framework (``/dev/rk_dma_heap``, listed by
    ``proc/rk_dma_heap/dma_heap_info``), where drivers may also take memory without a dma-buf
    (``contig``: allocation -> the name of who took it).
    """

    kind = ""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.used = 0
        self.contig: dict[Allocation, str] = {}

    @property
    def area(self) -> "Heap":
        """The heap that holds the memory: itself, or the one an alias shares."""
        return self

    @property
    def rockchip(self) -> bool:
        """Rockchip's rk_dma_heap (its own files: dma_heap_info, contiguous owners), by its name."""
        return self.name == ROCKCHIP_CMA_HEAP

    @property
    def caches_sgt(self) -> bool:
        """Its dma-bufs keep an attachment's sgt mapped (rk_dma_heap's cache_sgt_mapping)."""
        return self.rockchip

    def allocate(self, nbytes: int, address: Optional[int] = None) -> Allocation:
        """``nbytes`` (page-aligned up) from the heap; ``address``: exactly there (a CMA heap only:
        how ``memtrackfs load`` puts a captured buffer back where it was)."""
        raise NotImplementedError

    def allocate_contig(self, nbytes: int, owner: str, address: Optional[int] = None) -> Allocation:
        """Memory without a dma-buf (rk_dma_heap_alloc_contig_pages, dma_alloc_coherent), recorded
        with its owner's name until it is released; ``address`` as for ``allocate``."""
        allocation = self.allocate(nbytes, address)
        self.contig[allocation] = owner
        release = allocation.release

        def release_contig() -> None:
            del self.contig[allocation]
            release()
        allocation.release = release_contig  # type: ignore[method-assign]
        return allocation

    def _checked_size(self, nbytes: int) -> int:
        """The page-aligned size to allocate (heaps round up, as dma-heap.c does), or an error."""
        if type(nbytes) is not int or not 0 < nbytes <= MAX_BUFFER_BYTES:
            raise KernelError(errno.EINVAL, f"a buffer size must be 1..{MAX_BUFFER_BYTES} bytes, got {nbytes!r}")
        size = page_align(nbytes)
        if size > self.capacity:
            raise KernelError(errno.ENOMEM, f"{size} bytes is more than heap {self.name}'s whole "
                                            f"capacity of {format_bytes(self.capacity)}")
        return size


class SystemHeap(Heap):
    """Page-scattered RAM: each buffer is a list of 1 MiB, 64 KiB and 4 KiB chunks."""

    kind = "system"
    ORDERS = (8, 4, 0)  # system_heap.c's orders[]: chunks of 4 KiB << order, largest first
    # Chunk slots are spread over RAM by an odd multiplier: a bijection on a power-of-two range,
    # so addresses look scattered yet never collide.
    _SCATTER = 0x9E3779B1

    def __init__(self, name: str, capacity: int, base: int = SYSTEM_RAM_BASE) -> None:
        super().__init__(name, capacity)
        # Each order gets a power-of-two region at least as large as the heap: it has a slot for
        # every chunk of that order that can be live at once.
        span = 1 << (capacity - 1).bit_length()
        self._regions = {order: base + i * span for i, order in enumerate(self.ORDERS)}
        self.end = base + len(self.ORDERS) * span  # where the next system heap's RAM may start
        self._slots = {order: span // (PAGE_SIZE << order) for order in self.ORDERS}
        self._next_slot = dict.fromkeys(self.ORDERS, 0)
        self._free_slots: dict[int, list[int]] = {order: [] for order in self.ORDERS}

    def allocate(self, nbytes: int, address: Optional[int] = None) -> Allocation:
        size = self._checked_size(nbytes)
        if address is not None:
            raise KernelError(errno.EINVAL, f"heap {self.name} scatters its pages: it places no buffer at an address")
        if self.used + size > self.capacity:
            raise KernelError(errno.ENOMEM, f"heap {self.name}: {size} bytes requested, only "
                                            f"{self.capacity - self.used} of {format_bytes(self.capacity)} free")
        chunks: list[tuple[int, int]] = []
        remaining = size
        for order in self.ORDERS:
            chunk = PAGE_SIZE << order
            while remaining >= chunk:
                chunks.append((order, self._take_slot(order)))
                remaining -= chunk
        self.used += size
        segments = [Segment(self._address(order, slot), PAGE_SIZE << order) for order, slot in chunks]
        return Allocation(segments, lambda: self._free(chunks, size))

    def _take_slot(self, order: int) -> int:
        free = self._free_slots[order]
        if free:
            return free.pop()
        slot = self._next_slot[order]
        self._next_slot[order] = slot + 1
        return slot

    def _address(self, order: int, slot: int) -> int:
        # slot + 1: slot 0 would sit at the region's very start, which looks laid out, not scattered.
        return self._regions[order] + ((slot + 1) * self._SCATTER % self._slots[order]) * (PAGE_SIZE << order)

    def _free(self, chunks: list[tuple[int, int]], size: int) -> None:
        for order, slot in reversed(chunks):
            self._free_slots[order].append(slot)
        self.used -= size


class CmaHeap(Heap):
    """A contiguous memory area: first-fit page runs, ENOMEM when none is long enough."""

    kind = "cma"

    def __init__(self, name: str, capacity: int, base: int, log: KernelLog) -> None:
        super().__init__(name, capacity)
        self.base = base
        self.pages = capacity // PAGE_SIZE
        self.bitmap = bytearray(self.pages)  # one byte per page, 1 = allocated (cma->bitmap)
        self._log = log

    def allocate(self, nbytes: int, address: Optional[int] = None) -> Allocation:
        size = self._checked_size(nbytes)
        count = size // PAGE_SIZE
        if address is not None:
            start = self._pages_at(address, count)
        else:
            start = self.bitmap.find(bytes(count))  # first fit: the lowest run of `count` free pages
        if start < 0:
            # mm/cma.c reports every failed cma_alloc() in the kernel log (its pr_fmt adds "cma: ").
            self._log.emit(_KERN_ERR, f"cma: cma_alloc: {self.name}: alloc failed, req-size: {count} pages, ret: -12")
            free_ranges = self.free_ranges()
            largest = max((length for _, length in free_ranges), default=0)
            raise KernelError(errno.ENOMEM, f"heap {self.name}: no free contiguous range of {count} pages "
                                            f"({(self.pages - self.used // PAGE_SIZE)} pages free in "
                                            f"{len(free_ranges)} ranges, the largest {largest} pages)")
        self.bitmap[start:start + count] = b"\x01" * count
        self.used += size
        return Allocation([Segment(self.base + start * PAGE_SIZE, size)], lambda: self._free(start, count))

    def _pages_at(self, address: int, count: int) -> int:
        start, offset = divmod(address - self.base, PAGE_SIZE)
        if offset or start < 0 or start + count > self.pages:
            raise KernelError(errno.EINVAL,
                              f"{address:#x} is not a page of heap {self.name} with {count} pages after it")
        if any(self.bitmap[start:start + count]):
            raise KernelError(errno.EBUSY, f"heap {self.name}: pages from {address:#x} are taken")
        return start

    def _free(self, start: int, count: int) -> None:
        self.bitmap[start:start + count] = bytes(count)
        self.used -= count * PAGE_SIZE

    def free_ranges(self) -> list[tuple[int, int]]:
        """(first page, page count) of every run of free pages, lowest first."""
        return [(m.start(), m.end() - m.start()) for m in re.finditer(rb"\x00+", self.bitmap)]


class HeapAlias(Heap):
    """Another name for a heap's memory: Rockchip registers ``system``, ``system-uncached``, ...
    over the same RAM and ``cma``, ``cma-uncached`` over the same CMA area (they differ in cache
    attributes, which hold no bytes). Buffers carry the alias's name as exporter."""

    def __init__(self, name: str, target: Heap) -> None:  # no super().__init__: the target counts
        self.name = name
        self.target = target
        self.kind = target.kind
        self.contig = {}

    @property
    def area(self) -> Heap:
        return self.target

    @property  # type: ignore[override]
    def capacity(self) -> int:
        return self.target.capacity

    @property  # type: ignore[override]
    def used(self) -> int:
        return self.target.used

    def allocate(self, nbytes: int, address: Optional[int] = None) -> Allocation:
        return self.target.allocate(nbytes, address)


# -- configuration: the heaps a mount starts with -----------------------------------------------

def heap_kind(name: str) -> str:
    """``system`` and ``system-*`` (Rockchip's system-uncached, system-dma32) are system heaps;
    every other name is a CMA heap's."""
    return SystemHeap.kind if name == "system" or name.startswith("system-") else CmaHeap.kind


class HeapSpec(NamedTuple):
    """One ``--heap NAME[=SIZE]``, or a board's heap; heaps naming the same ``area`` share the
    memory of the first of them (its capacity counts)."""

    name: str
    capacity: int
    area: Optional[str] = None

    @property
    def kind(self) -> str:
        return heap_kind(self.name)


DEFAULT_SYSTEM_CAPACITY = 4 * GiB
# Rockchip BSPs call their CMA heap "cma" (the one proc/rk_dma_heap/alloc_bitmap shows).
DEFAULT_HEAPS = (HeapSpec("system", DEFAULT_SYSTEM_CAPACITY), HeapSpec("cma", 256 * MiB))
# Rockchip's rk_dma_heap CMA heap (drivers/dma-buf/rk_heaps/rk-dma-cma.c: cma_declare_contiguous(...,
# "rk-dma-heap-cma", ...)); its dma_buf_ops set cache_sgt_mapping (rk-cma-heap.c).
ROCKCHIP_CMA_HEAP = "rk-dma-heap-cma"


def parse_size(text: str) -> int:
    """``memparse()`` style: digits with an optional K, M or G (binary) suffix."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise KernelError(errno.EINVAL, f"size {text!r} is not a number with an optional K, M or G suffix")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def parse_heap_option(text: str) -> HeapSpec:
    """``NAME`` or ``NAME=SIZE``; a CMA heap needs its size, a system heap defaults to 4 GiB of RAM."""
    name, has_size, size_text = text.partition("=")
    if not _HEAP_NAME.fullmatch(name):
        raise KernelError(errno.EINVAL, f"heap name {name!r}: letters, digits and ',._-', at most 64")
    if not has_size:
        if heap_kind(name) == CmaHeap.kind:
            raise KernelError(errno.EINVAL, f"CMA heap {name!r} needs a size, e.g. {name}=256M")
        return HeapSpec(name, DEFAULT_SYSTEM_CAPACITY)
    capacity = parse_size(size_text)
    if capacity <= 0 or capacity % PAGE_SIZE or capacity > MAX_HEAP_BYTES:
        raise KernelError(errno.EINVAL, f"heap {name}: size must be a non-zero multiple of {PAGE_SIZE} "
                                        f"bytes up to {format_bytes(MAX_HEAP_BYTES)}, got {size_text}")
    return HeapSpec(name, capacity)


def parse_heap_options(options: Sequence[str]) -> tuple[HeapSpec, ...]:
    """The heaps of ``--heap`` options (none given: DEFAULT_HEAPS); every error found up front."""
    if not options:
        return DEFAULT_HEAPS
    specs = tuple(parse_heap_option(text) for text in options)
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise KernelError(errno.EINVAL, f"heap {duplicates[0]!r} is given more than once")
    cma_bytes = sum(_align(spec.capacity, CMA_AREA_ALIGN) for spec in specs if spec.kind == CmaHeap.kind)
    if cma_bytes > CMA_ZONE_END - CMA_ZONE_START:
        raise KernelError(errno.EINVAL, f"CMA heaps need {format_bytes(cma_bytes)}: more than the "
                                        f"{format_bytes(CMA_ZONE_END - CMA_ZONE_START)} below 4 GiB where CMA lives")
    return specs


def build_heaps(specs: Sequence[HeapSpec], log: KernelLog) -> dict[str, Heap]:
    """The heaps, by name in the given order; CMA areas one after another from 256 MiB, and each
    system heap's RAM after the previous one's, so no two buffers share an address. A heap whose
    ``area`` an earlier one already has becomes an alias of that one."""
    heaps: dict[str, Heap] = {}
    areas: dict[str, Heap] = {}
    cma_base, ram_base = CMA_ZONE_START, SYSTEM_RAM_BASE
    for spec in specs:
        heap: Heap
        if spec.area is not None and spec.area in areas:
            heap = HeapAlias(spec.name, areas[spec.area])
        elif spec.kind == CmaHeap.kind:
            heap = CmaHeap(spec.name, spec.capacity, cma_base, log)
            cma_base += _align(spec.capacity, CMA_AREA_ALIGN)
        else:
            heap = SystemHeap(spec.name, spec.capacity, ram_base)
            ram_base = heap.end
        if spec.area is not None:
            areas.setdefault(spec.area, heap)
        heaps[spec.name] = heap
    return heaps


def first_cma_heap(heaps: dict[str, Heap]) -> Optional[CmaHeap]:
    """The board's default CMA heap: the first one configured."""
    return next((heap for heap in heaps.values() if isinstance(heap, CmaHeap)), None)


def default_cma_heap(heaps: dict[str, Heap]) -> Heap:
    """Where dma-contig allocations and dma_alloc_coherent() get their memory: the first CMA heap
    that is not Rockchip's rk_dma_heap (drivers reach that one only by name), else the first heap."""
    plain = [heap for heap in heaps.values() if not heap.rockchip]
    return next((heap for heap in plain if heap.kind == CmaHeap.kind), None) or next(iter(heaps.values()))
