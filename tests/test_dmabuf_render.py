"""Golden bytes of every dma-buf view, from one model: named and unnamed buffers, long names and
exporters cut at 16 columns, attachments, mapped scatter lists in KiB and in Bytes."""
from __future__ import annotations

import errno
from typing import Optional, Sequence

import pytest

from memtrackfs.errors import KernelError
from memtrackfs.model.dmabuf import DmaBufTable
from memtrackfs.model.heaps import Allocation, CmaHeap, Heap, Segment, SystemHeap
from memtrackfs.model.kmsg import KernelLog
from memtrackfs.render.dma_buf import (
    render_dma_buf_bufinfo,
    render_dma_buf_exporter_name,
    render_dma_buf_size,
)
from memtrackfs.render.rk_dma_heap import render_rk_dma_heap_alloc_bitmap
from memtrackfs.render.rk_dmabuf import (
    parse_rk_dmabuf_peak_write,
    render_rk_dmabuf_dev,
    render_rk_dmabuf_peak,
    render_rk_dmabuf_sgt,
    render_rk_dmabuf_size,
)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
APP = "app"


class FixedHeap(Heap):
    """Hands out exactly the given segments: a driver's own memory with a sub-KiB tail."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        super().__init__("fixed", GiB)
        self.segments = segments

    def allocate(self, nbytes: int, address: Optional[int] = None) -> Allocation:
        return Allocation(self.segments, lambda: None)


@pytest.fixture
def board() -> tuple[DmaBufTable, CmaHeap]:
    """Four buffers, oldest first: a system-heap one with a long Rockchip name, two devices
    attached and the newest mapped; an unnamed vb2 export from CMA, mapped; a DRM PRIME export
    (its exporter caches mapped scatter lists) whose scatter list ends in 512 bytes; a small CMA
    buffer with no attachment."""
    table = DmaBufTable()
    cma = CmaHeap("cma", 128 * 4096, 0x1000_0000, KernelLog(lambda: 0, []))
    a = table.export("system", SystemHeap("system", GiB), MiB + 64 * KiB + 4096, "416-allocator@4.0-s", APP)
    b = table.export("videobuf2_dma_contig", cma, 155520, None, APP)
    c = table.export("rknpu", FixedHeap([Segment(0x2_4000_0000, 4096), Segment(0x2_4000_2000, 512)]), 4608, "npu", APP,
                     caches_sgt=True)
    table.export("cma", cma, 4096, "1234-camera", APP)
    table.attach(a.ino, "2c000000.vpu", APP)
    for buf, device in ((a, "display-subsystem"), (b, "display-subsystem"), (c, "fdab0000.npu")):
        table.map(table.attach(buf.ino, device, APP).id, APP)
    return table, cma


def test_size_and_peak(board: tuple[DmaBufTable, CmaHeap]) -> None:
    table, _ = board
    assert render_rk_dmabuf_size(table) == b"Total: 1252 KiB\n"  # 1282560 bytes, truncated
    assert render_rk_dmabuf_peak(table) == b"Peak: 1 MiB\n"


def test_dev(board: tuple[DmaBufTable, CmaHeap]) -> None:
    table, _ = board
    assert render_rk_dmabuf_dev(table) == (
        b"          DMABUF NAME             EXPORT                 SIZE:KiB AttachedDevices\n"
        b"\n"
        b"ffffff8211d4d800 1234-camera      cma                       4 KiB\n"
        b"ffffff81a2e17600 npu              rknpu                     4 KiB fdab0000.npu\n"
        b"ffffff8133ee1400 (null)           videobuf2_dma_co        152 KiB display-subsystem\n"
        b"ffffff82c4fab200 416-allocator@4. system                 1092 KiB display-subsystem 2c000000.vpu\n")


SGT = (b"          DMABUF NAME             EXPORT                 SIZE:KiB   SGLIST\n"
       b"\n"
       b"ffffff81a2e17600 npu              rknpu                     4 KiB"
       b"   0: 0x0000000240000000..0x0000000240000fff (         4 KiB)\n"
       + b" " * 65 + b"   1: 0x0000000240002000..0x00000002400021ff (       512 Bytes)\n")


def test_sgt_shows_only_the_scatter_lists_an_exporter_keeps(board: tuple[DmaBufTable, CmaHeap]) -> None:
    """The system-heap and vb2 buffers are mapped too, but their exporters keep no attach->sgt."""
    table, _ = board
    assert render_rk_dmabuf_sgt(table) == SGT
    npu = next(a for a in table.attachments.values() if a.device == "fdab0000.npu")
    table.unmap(npu.id, APP)
    assert render_rk_dmabuf_sgt(table) == SGT  # dma_buf_unmap_attachment() keeps a cached sgt
    table.detach(npu.id, APP)
    assert render_rk_dmabuf_sgt(table).endswith(b"  SGLIST\n\n")


def test_sgt_of_a_device_behind_an_iommu_is_its_iova_range() -> None:
    table = DmaBufTable()
    heap = CmaHeap("rk-dma-heap-cma", 64 * 4096, 0x1000_0000, KernelLog(lambda: 0, []))
    buf = table.export("rk-dma-heap-cma", heap, 3 * 4096, "7-camera", APP, caches_sgt=True)
    table.map(table.attach(buf.ino, "fdc38100.rkvdec-core", APP).id, APP, [(0xFFD0_0000, 3 * 4096)])
    assert render_rk_dmabuf_sgt(table).split(b"\n")[2] == (
        b"%016x 7-camera         rk-dma-heap-cma          12 KiB" % buf.address
        + b"   0: 0x00000000ffd00000..0x00000000ffd02fff (        12 KiB)")


def test_bufinfo(board: tuple[DmaBufTable, CmaHeap]) -> None:
    table, _ = board
    assert render_dma_buf_bufinfo(table) == (
        b"\nDma-buf Objects:\n"
        b"size    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n"
        b"00004096\t00000002\t00080007\t00000001\tcma\t00000044\t1234-camera\n"
        b"\tAttached Devices:\n"
        b"Total 0 devices attached\n\n"
        b"00004608\t00000002\t00080007\t00000002\trknpu\t00000043\tnpu\n"
        b"\tAttached Devices:\n"
        b"\tfdab0000.npu\n"
        b"Total 1 devices attached\n\n"
        b"00155648\t00000002\t00080007\t00000002\tvideobuf2_dma_contig\t00000042\t<none>\n"
        b"\tAttached Devices:\n"
        b"\tdisplay-subsystem\n"
        b"Total 1 devices attached\n\n"
        b"01118208\t00000002\t00080007\t00000003\tsystem\t00000041\t416-allocator@4.0-s\n"
        b"\tAttached Devices:\n"
        b"\tdisplay-subsystem\n"
        b"\t2c000000.vpu\n"
        b"Total 2 devices attached\n\n"
        b"\nTotal 4 objects, 1282560 bytes\n")


def test_sysfs_buffer_files(board: tuple[DmaBufTable, CmaHeap]) -> None:
    table, _ = board
    assert render_dma_buf_exporter_name(table.buffers[42]) == b"videobuf2_dma_contig\n"
    assert render_dma_buf_size(table.buffers[42]) == b"155648\n"
    assert render_dma_buf_size(table.buffers[43]) == b"4608\n"


def test_empty_views() -> None:
    table = DmaBufTable()
    assert render_rk_dmabuf_size(table) == b"Total: 0 KiB\n"
    assert render_rk_dmabuf_dev(table).endswith(b"AttachedDevices\n\n")
    assert render_rk_dmabuf_sgt(table).endswith(b"  SGLIST\n\n")
    assert render_dma_buf_bufinfo(table) == (b"\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \t"
                                             b"exp_name\tino     \tname\n\nTotal 0 objects, 0 bytes\n")


def test_alloc_bitmap(board: tuple[DmaBufTable, CmaHeap]) -> None:
    _, cma = board  # pages 0-37 (vb2) and 38 (camera) are in use
    assert render_rk_dma_heap_alloc_bitmap(cma) == (
        b"Total: 512 KiB\n Used: 156 KiB\n\nFFFFFFFF 0000007F 00000000 00000000\n")


def test_alloc_bitmap_lines_of_eight_words() -> None:
    cma = CmaHeap("cma", 9 * 32 * 4096 + 4096, 0x1000_0000, KernelLog(lambda: 0, []))  # 10 words, last partial
    cma.allocate(4096)
    cma.allocate(33 * 4096)  # pages 1..33
    last = cma.allocate(9 * 32 * 4096 + 4096 - 34 * 4096)  # the rest, up to the very last page
    assert render_rk_dma_heap_alloc_bitmap(cma) == (
        b"Total: 1156 KiB\n Used: 1156 KiB\n\n"
        b"FFFFFFFF FFFFFFFF FFFFFFFF FFFFFFFF FFFFFFFF FFFFFFFF FFFFFFFF FFFFFFFF\n"
        b"FFFFFFFF 00000001\n")
    last.release()
    assert render_rk_dma_heap_alloc_bitmap(cma) == (
        b"Total: 1156 KiB\n Used: 136 KiB\n\n"
        b"FFFFFFFF 00000003 00000000 00000000 00000000 00000000 00000000 00000000\n"
        b"00000000 00000000\n")


@pytest.mark.parametrize("data", [b"0\n", b"0", b"00", b"0x", b"0 and the rest"])
def test_peak_write_zero_resets_to_zero(board: tuple[DmaBufTable, CmaHeap], data: bytes) -> None:
    table, _ = board
    parse_rk_dmabuf_peak_write(data)
    table.reset_peak()
    assert render_rk_dmabuf_peak(table) == b"Peak: 0 MiB\n"
    assert table.total == 1282560  # the total is untouched


@pytest.mark.parametrize("data", [b"1\n", b" 0\n", b"\n", b"-1", b""])
def test_peak_write_other_first_byte_is_einval(board: tuple[DmaBufTable, CmaHeap], data: bytes) -> None:
    table, _ = board
    table.peak = 5 * MiB
    with pytest.raises(KernelError) as info:
        parse_rk_dmabuf_peak_write(data)
    assert info.value.errno == errno.EINVAL
    assert table.peak == 5 * MiB
