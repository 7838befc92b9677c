"""Renderer of Rockchip's ``proc/rk_dma_heap/alloc_bitmap`` (rk_cma_heap.c's cma_procfs_show())."""
from __future__ import annotations

from memtrackfs.model.heaps import CmaHeap

_BITS = bytes.maketrans(b"\x00\x01", b"01")
_WORD_PAGES = 32
_WORDS_PER_LINE = 8


def _bitmap_words(heap: CmaHeap) -> list[int]:
    """cma->bitmap (bit n = page n) read as u32 words, as the kernel prints it on little-endian arm64."""
    bits = heap.bitmap.translate(_BITS)
    return [int(bits[i:i + _WORD_PAGES][::-1], 2) for i in range(0, len(bits), _WORD_PAGES)]


def render_rk_dma_heap_alloc_bitmap(heap: CmaHeap) -> bytes:
    """Total and used KiB, a blank line, then the bitmap as "%08X" words, 8 a line."""
    words = _bitmap_words(heap)
    lines = [" ".join("%08X" % word for word in words[i:i + _WORDS_PER_LINE]) + "\n"
             for i in range(0, len(words), _WORDS_PER_LINE)]
    return (f"Total: {heap.capacity >> 10} KiB\n Used: {heap.used >> 10} KiB\n\n" + "".join(lines)).encode("ascii")
