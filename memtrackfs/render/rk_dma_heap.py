"""Renderers of Rockchip's rk_dma_heap files: ``proc/rk_dma_heap/alloc_bitmap`` (rk-cma-heap.c's
cma_procfs_show()), ``proc/rk_dma_heap/dma_heap_info`` and its debugfs twin
(rk-dma-heap.c's rk_dma_heap_proc_show()), ``sys/kernel/rk_dma_heap/rk_total_pools_kb``.
"""
from __future__ import annotations

from typing import Sequence

from memtrackfs.model.dmabuf import DmaBuf, DmaBufTable
from memtrackfs.model.heaps import CmaHeap, Heap

_BITS = bytes.maketrans(b"\x00\x01", b"01")
_WORD_PAGES = 32
_WORDS_PER_LINE = 8


def _bitmap_words(heap: CmaHeap) -> list[int]:
    """cma->bitmap (bit n = page n) read as u32 words, as the kernel prints it on little-endian arm64."""
    bits = heap.bitmap.translate(_BITS)
    return [int(bits[i:i + _WORD_PAGES][::-1], 2) for i in range(0, len(bits), _WORD_PAGES)]


def render_rk_dma_heap_alloc_bitmap(heap: CmaHeap) -> bytes:
    """cma_procfs_show(): total and used KiB, a blank line, then the bitmap as "%08X" words, 8 a line."""
    words = _bitmap_words(heap)
    lines = [" ".join("%08X" % word for word in words[i:i + _WORDS_PER_LINE]) + "\n"
             for i in range(0, len(words), _WORDS_PER_LINE)]
    return (f"Total: {heap.capacity >> 10} KiB\n Used: {heap.used >> 10} KiB\n\n" + "".join(lines)).encode("ascii")


def _pa(value: int) -> str:
    return f"0x{value:016x}"  # %pa of a phys_addr_t on arm64


def _alloc_by(owner: str, start: int, size: int) -> str:
    """``"\\tAlloc by (%-20s)\\t[%pa-%pa]\\t%pa (%lu KiB)\\n"``: owner, first and last address, size.
    The owner is padded to 20 bytes, as C counts (names are printable, possibly not ASCII)."""
    pad = " " * max(0, 20 - len(owner.encode("utf-8")))
    return f"\tAlloc by ({owner}{pad})\t[{_pa(start)}-{_pa(start + size - 1)}]\t{_pa(size)} ({size >> 10} KiB)\n"


def _dump_dmabuf(heap: Heap, buf: DmaBuf, out: list[str]) -> None:
    """rk_dma_heap_dump_dmabuf(): every dma-buf whose exporter name is the heap's starts a record,
    without a newline; only those the heap itself allocated (its dmabuf_list) complete it."""
    out.append(f"dma-heap:<{heap.name}> -dmabuf")
    if buf.heap is not heap:
        return
    out.append(f"\ti_ino = {buf.ino}\n")
    out.append(_alloc_by(buf.name if buf.name is not None else "(null)", buf.segments[0].address, buf.size))
    out.append("\t\tAttached Devices:\n")
    out.extend(f"\t\t{a.device}\n" for a in buf.newest_attachments())
    out.append(f"Total {len(buf.attachments)} devices attached\n\n")


def render_rk_dma_heap_info(heaps: Sequence[Heap], table: DmaBufTable) -> bytes:
    """rk_dma_heap_proc_show(): per rk heap (newest registered first), its dma-bufs (newest
    first) then its allocations without a dma-buf (oldest first); the heaps' total at the end."""
    out: list[str] = []
    total = 0
    for heap in reversed(heaps):
        for buf in table.newest_first():
            if buf.exporter == heap.name:
                _dump_dmabuf(heap, buf, out)
        for allocation, owner in heap.contig.items():
            out.append(f"dma-heap:<{heap.name}> -non dmabuf\n")
            out.append(_alloc_by(owner, allocation.segments[0].address, allocation.size))
        total += heap.used
    out.append(f"\nTotal : 0x{total:x} ({total >> 10} KiB)\n")
    return "".join(out).encode("utf-8")


def render_rk_total_pools_kb() -> bytes:
    """rk_total_pools_kb_show(): ``"%llu\\n"`` of the rk heaps' page pools in KiB; neither rk heap
    has pools (no get_pool_size in their ops), so it is always 0."""
    return b"0\n"
