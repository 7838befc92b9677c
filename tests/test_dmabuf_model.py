"""The dma-buf and heap model on its own: references, Rockchip total/peak, heaps, configuration."""
from __future__ import annotations

import errno
from typing import Optional

import pytest

from memtrackfs.errors import KernelError
from memtrackfs.model.dmabuf import (
    BOOT_EXPORTS,
    DmaBuf,
    DmaBufTable,
    rockchip_default_name,
)
from memtrackfs.model.heaps import (
    DEFAULT_HEAPS,
    MAX_BUFFER_BYTES,
    CmaHeap,
    Heap,
    HeapSpec,
    SystemHeap,
    build_heaps,
    first_cma_heap,
    parse_heap_options,
)
from memtrackfs.model.kmsg import KernelLog

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
APP, OTHER = "app", "other"  # holders: any hashable stands for a process


def new_log() -> KernelLog:
    return KernelLog(lambda: 0, [])


def new_cma(capacity: int = MiB) -> CmaHeap:
    return CmaHeap("cma", capacity, 0x1000_0000, new_log())


def snapshot(table: DmaBufTable) -> tuple:
    return (table.total, table.peak, {ino: (b.refs, len(b.attachments)) for ino, b in table.buffers.items()},
            {i: a.mapped for i, a in table.attachments.items()})


def expect_error(code: int, call, *args) -> str:
    with pytest.raises(KernelError) as info:
        call(*args)
    assert info.value.errno == code, info.value
    return info.value.message


# -- Rockchip total and peak -------------------------------------------------------------------

def test_total_follows_buffers_and_peak_moves_only_at_export() -> None:
    table, heap = DmaBufTable(), SystemHeap("system", GiB)
    a = table.export("system", heap, 3 * MiB, "a", APP)
    b = table.export("system", heap, 2 * MiB, None, APP)
    assert (a.ino, b.ino) == (BOOT_EXPORTS + 1, BOOT_EXPORTS + 2)
    assert (table.total, table.peak) == (5 * MiB, 5 * MiB)
    assert table.put(a.ino, APP) is True
    assert (table.total, table.peak) == (2 * MiB, 5 * MiB)  # release: total falls, peak stays
    table.reset_peak()
    assert table.peak == 0  # reset to 0, not to the total
    assert table.put(b.ino, APP) is True
    assert table.peak == 0  # a release never moves the peak
    table.export("system", heap, MiB, None, APP)
    assert (table.total, table.peak) == (MiB, MiB)  # the next export does
    assert heap.used == MiB


def test_newest_first_and_attachments_newest_first() -> None:
    table, heap = DmaBufTable(), SystemHeap("system", GiB)
    inos = [table.export("system", heap, 4096, None, APP).ino for _ in range(3)]
    assert [b.ino for b in table.newest_first()] == inos[::-1]
    for device in ("first", "second", "third"):
        table.attach(inos[0], device, APP)
    assert [a.device for a in table.buffers[inos[0]].newest_attachments()] == ["third", "second", "first"]


def test_buffer_pointers_are_stable_unique_kernel_addresses() -> None:
    table, heap = DmaBufTable(), SystemHeap("system", GiB)
    bufs = [table.export("system", heap, 4096, None, APP) for _ in range(2000)]
    addresses = {b.address for b in bufs}
    assert len(addresses) == len(bufs)
    assert all(0xFFFFFF8000000000 <= a < 0xFFFFFFC000000000 and a % 512 == 0 for a in addresses)
    assert bufs[0].address == bufs[0].address


# -- references ----------------------------------------------------------------------------------

def test_references_belong_to_holders_and_double_put_is_refused() -> None:
    table, heap = DmaBufTable(), SystemHeap("system", GiB)
    buf = table.export("system", heap, MiB, None, APP)
    assert table.get(buf.ino, OTHER).refs == 2
    assert table.held_by(OTHER) == {buf.ino: 1}
    assert table.put(buf.ino, APP) is False
    before = snapshot(table)
    message = expect_error(errno.EBADF, table.put, buf.ino, APP)  # APP's only reference is gone
    assert "holds no reference" in message
    assert snapshot(table) == before
    assert table.put(buf.ino, OTHER) is True
    assert not buf.alive and heap.used == 0
    assert "already released" in expect_error(errno.ENOENT, table.put, buf.ino, OTHER)


def test_attachments_hold_a_reference_and_map_the_backing_segments() -> None:
    table, heap = DmaBufTable(), new_cma()
    buf = table.export("videobuf2_dma_contig", heap, 64 * KiB, None, APP)
    attachment = table.attach(buf.ino, "display-subsystem", OTHER)
    assert buf.refs == 2
    assert table.put(buf.ino, APP) is False  # the importer still holds it
    assert table.map(attachment.id, OTHER) == ((0x1000_0000, 64 * KiB),)
    before = snapshot(table)
    expect_error(errno.EBUSY, table.map, attachment.id, OTHER)
    expect_error(errno.EPERM, table.unmap, attachment.id, APP)  # another connection's attachment
    expect_error(errno.ENOENT, table.detach, 999, OTHER)
    assert snapshot(table) == before
    table.unmap(attachment.id, OTHER)
    expect_error(errno.EINVAL, table.unmap, attachment.id, OTHER)
    table.map(attachment.id, OTHER)
    assert table.detach(attachment.id, OTHER) is True  # detach unmaps, and the last reference goes
    assert table.total == 0 and heap.used == 0 and not table.attachments


def test_release_holder_drops_everything_it_held_and_keeps_the_rest() -> None:
    table, heap = DmaBufTable(), SystemHeap("system", GiB)
    mine = table.export("system", heap, MiB, None, APP)
    shared = table.export("system", heap, 2 * MiB, None, OTHER)
    table.get(shared.ino, APP)
    table.get(mine.ino, APP)
    attachment = table.attach(shared.ino, "2c000000.vpu", APP)
    table.map(attachment.id, APP)
    assert sorted(table.release_holder(APP)) == [mine.ino]
    assert list(table.buffers) == [shared.ino] and shared.refs == 1 and not shared.attachments
    assert (table.total, table.peak, heap.used) == (2 * MiB, 3 * MiB, 2 * MiB)
    assert table.release_holder(APP) == []


def test_bad_exports_change_nothing() -> None:
    table, heap = DmaBufTable(), new_cma(MiB)
    for exporter, name, nbytes, code in [
        ("", None, 4096, errno.EINVAL), ("has space", None, 4096, errno.EINVAL),
        ("x" * 65, None, 4096, errno.EINVAL), ("cma", "line\nbreak", 4096, errno.EINVAL),
        ("cma", "n" * 33, 4096, errno.EINVAL), ("cma", "", 4096, errno.EINVAL),
        ("cma", None, 0, errno.EINVAL), ("cma", None, MAX_BUFFER_BYTES + 1, errno.EINVAL),
        ("cma", None, True, errno.EINVAL), ("cma", None, 2 * MiB, errno.ENOMEM),
    ]:
        expect_error(code, table.export, exporter, heap, nbytes, name, APP)
    assert snapshot(table) == (0, 0, {}, {}) and heap.used == 0 and not any(heap.bitmap)
    expect_error(errno.EINVAL, table.attach, 1, "bad device", APP)
    expect_error(errno.ENOENT, table.attach, 1, "display-subsystem", APP)
    assert table.export("cma", heap, 4096, "n" * 32, APP).name == "n" * 32


def test_rockchip_default_name() -> None:
    assert rockchip_default_name(416, "allocator@4.0-service") == "416-allocator@4.0-s"
    assert rockchip_default_name(2147483647, "c" * 15) == "2147483647-" + "c" * 15


# -- heaps ---------------------------------------------------------------------------------------

def test_system_heap_scatters_largest_chunks_first_and_reuses_freed_ones() -> None:
    heap = SystemHeap("system", GiB)
    table = DmaBufTable()
    buf = table.export("system", heap, 2 * MiB + 64 * KiB + 4096 + 1, None, APP)  # rounds up a page
    assert [s.length for s in buf.segments] == [MiB, MiB, 64 * KiB, 4096, 4096]
    assert buf.size == 2 * MiB + 64 * KiB + 2 * 4096 == heap.used
    assert all(s.address % s.length == 0 for s in buf.segments)
    assert len({s.address for s in buf.segments}) == 5
    many = [table.export("system", heap, 300 * 4096, None, APP) for _ in range(50)]
    addresses = [s.address for b in [buf, *many] for s in b.segments]
    assert len(set(addresses)) == len(addresses)  # no two live chunks share memory
    freed = set(buf.segments)
    table.put(buf.ino, APP)
    again = table.export("system", heap, buf.size, None, APP)
    assert set(again.segments) == freed  # the page allocator hands freed chunks out first


def test_system_heap_capacity() -> None:
    heap = SystemHeap("system", 8 * MiB)
    table = DmaBufTable()
    table.export("system", heap, 6 * MiB, None, APP)
    message = expect_error(errno.ENOMEM, table.export, "system", heap, 3 * MiB, None, APP)
    assert "only 2097152 of 8 MiB free" in message
    assert "whole capacity of 8 MiB" in expect_error(errno.ENOMEM, heap.allocate, 9 * MiB)


def test_cma_first_fit_enomem_fragmentation_and_recovery() -> None:
    log = new_log()
    heap = CmaHeap("cma", 64 * 4096, 0x1000_0000, log)
    table = DmaBufTable()
    bufs = [table.export("cma", heap, 8 * 4096, None, APP) for _ in range(8)]
    assert [b.segments[0].address for b in bufs] == [0x1000_0000 + i * 8 * 4096 for i in range(8)]
    message = expect_error(errno.ENOMEM, table.export, "cma", heap, 4096, None, APP)
    assert "0 pages free in 0 ranges" in message
    assert log.records[-1].message == "cma: cma_alloc: cma: alloc failed, req-size: 1 pages, ret: -12"
    for buf in bufs[1::2]:  # free every other one: 32 pages free, in 4 holes of 8
        table.put(buf.ino, APP)
    assert heap.free_ranges() == [(8, 8), (24, 8), (40, 8), (56, 8)]
    message = expect_error(errno.ENOMEM, table.export, "cma", heap, 9 * 4096, None, APP)
    assert "32 pages free in 4 ranges, the largest 8 pages" in message
    table.put(bufs[2].ino, APP)  # joins two holes: 24 free pages in a row
    assert heap.free_ranges() == [(8, 24), (40, 8), (56, 8)]
    big = table.export("cma", heap, 9 * 4096, None, APP)
    assert big.segments == ((0x1000_0000 + 8 * 4096, 9 * 4096),)  # first fit: the lowest hole
    assert heap.used == (64 - 32 - 8 + 9) * 4096


# -- configuration -------------------------------------------------------------------------------

def test_heap_options() -> None:
    assert parse_heap_options([]) == DEFAULT_HEAPS
    specs = parse_heap_options(["system", "cma=256M", "linux,cma=65536K", "system-uncached=2G", "reserved=4096"])
    assert specs == (HeapSpec("system", 4 * GiB), HeapSpec("cma", 256 * MiB), HeapSpec("linux,cma", 64 * MiB),
                     HeapSpec("system-uncached", 2 * GiB), HeapSpec("reserved", 4096))
    heaps = build_heaps(specs, new_log())
    assert [h.kind for h in heaps.values()] == ["system", "cma", "cma", "system", "cma"]
    assert first_cma_heap(heaps) is heaps["cma"]
    assert [h.base for h in heaps.values() if isinstance(h, CmaHeap)] == [0x1000_0000, 0x2000_0000, 0x2400_0000]
    first, second = (h.allocate(MiB + 64 * KiB + 4096).segments for h in (heaps["system"], heaps["system-uncached"]))
    assert max(s.address for s in first) < heaps["system"].end <= min(s.address for s in second)
    assert first_cma_heap(build_heaps(parse_heap_options(["system"]), new_log())) is None


@pytest.mark.parametrize("options, words", [
    (["cma"], "needs a size"),
    (["cma=0"], "non-zero multiple of 4096"),
    (["cma=1000"], "non-zero multiple of 4096"),
    (["system=65G"], "up to 64 GiB"),
    (["cma=12Q"], "not a number"),
    (["bad name=1M"], "letters, digits"),
    (["system", "system"], "more than once"),
    (["cma=2G", "reserved=2G"], "below 4 GiB"),
])
def test_bad_heap_options(options: list[str], words: str) -> None:
    assert words in expect_error(errno.EINVAL, parse_heap_options, options)


def test_an_export_may_ask_for_its_inode_and_place_but_never_a_taken_one() -> None:
    """How `memtrackfs load` recreates a captured board: inodes only count up, pages only once."""
    table, cma, system = DmaBufTable(), new_cma(), SystemHeap("system", 16 * MiB)
    assert table.export("vb2", cma, 4096, None, APP, ino=5).ino == 5  # nothing handed out yet: any
    assert table.export("vb2", cma, 4096, None, APP).ino == BOOT_EXPORTS + 1  # the counter goes on from its own
    def export(heap: Heap, ino: int, address: Optional[int] = None) -> DmaBuf:
        return table.export("vb2", heap, 4096 if ino != 100 else 8192, None, APP, ino=ino, address=address)

    assert "below 42" in expect_error(errno.EINVAL, export, cma, 41)
    placed = export(cma, 100, 0x1000_0000 + 10 * 4096)
    assert placed.ino == 100 and placed.segments[0].address == 0x1000_0000 + 10 * 4096
    before = snapshot(table)
    assert "are taken" in expect_error(errno.EBUSY, export, cma, 200, 0x1000_0000 + 11 * 4096)
    assert "is not a page of heap cma" in expect_error(errno.EINVAL, export, cma, 200, 0x1000_0000 + 100)
    assert "scatters its pages" in expect_error(errno.EINVAL, export, system, 200, 0x1_0000_0000)
    assert snapshot(table) == before  # refused: nothing changed
