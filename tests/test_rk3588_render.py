"""The RK3588 board's files from its pure model, byte for byte: golden bytes written by hand from
the kernel's format strings (drivers/video/rockchip/mpp/mpp_service.c, mpp_rkvenc2.c,
mpp_common.c; drivers/dma-buf/rk_heaps/rk-dma-heap.c), and the model's rules (IOVA allocation,
session lists, eviction, release) they rest on."""
from __future__ import annotations

import errno

import pytest

from memtrackfs.errors import KernelError
from memtrackfs.kernel import Kernel
from memtrackfs.model.boards import board
from memtrackfs.model.mpp import IovaDomain
from memtrackfs.render.mpp_service import (
    parse_u32_write,
    render_mpp_load,
    render_mpp_sessions_summary,
    render_mpp_supports_cmd,
    render_mpp_supports_device,
    render_mpp_version,
    render_u32,
)
from memtrackfs.render.rk_dma_heap import (
    render_rk_dma_heap_info,
    render_rk_total_pools_kb,
)
from memtrackfs.render.rk_dmabuf import render_rk_dmabuf_dev, render_rk_dmabuf_sgt
from memtrackfs.tools.parse import (
    DmaHeapInfo,
    HeapAllocation,
    parse_dma_heap_info,
    parse_mpp_load,
)

KiB, MiB = 1 << 10, 1 << 20
APP, DRIVER = "app", "driver"   # holders: the application's process, the mpp driver
FRAME_8K = 61710336             # an 8K HEVC frame buffer (docs/spec/rockchip-rk3588.md)
RKVDEC, RKVENC = 9, 16


def kernel(bsp: str = "6.1") -> Kernel:
    return Kernel(board=board("rk3588", bsp))


def decoder_session(k: Kernel, sizes: list[int], pid: int = 1235) -> list[int]:
    """An initialised decoder session that imported one buffer of each size, in order."""
    assert k.mpp is not None
    session = k.mpp.init(k.mpp.open(pid, 1234, DRIVER), RKVDEC)
    inodes = [k.dmabufs.heap_alloc(k.heaps["system"], size, "1234-player", APP).ino for size in sizes]
    k.mpp.import_task(session, inodes)
    return inodes


def test_iova_is_handed_out_top_down_and_aligned_below_the_reserved_rcb_window() -> None:
    domain = IovaDomain([(0xFFE00000, 0x100000), (0xFFF00000, 0x100000)])
    assert domain.allocate(FRAME_8K) == 0xFC000000      # 15066 pages, 64 MiB aligned
    assert domain.allocate(FRAME_8K) == 0xF8000000
    assert domain.allocate(512 * KiB) == 0xFFD80000     # the gap under the RCB window
    assert domain.allocate(12 * KiB) == 0xFFD7C000      # under 32 pages: 16 KiB, 16 KiB aligned
    domain.free(0xFC000000)
    assert domain.allocate(FRAME_8K) == 0xFC000000


def test_sessions_summary_6_1_dumps_each_session_then_the_encoder_table() -> None:
    k = kernel("6.1")
    assert k.mpp is not None
    decoder_session(k, [FRAME_8K, 512 * KiB])
    k.mpp.open(1300, 1300, DRIVER)                     # opened, never initialised: not listed
    encoder = k.mpp.init(k.mpp.open(3964, 3960, DRIVER), RKVENC)
    k.mpp.set_codec_info(encoder, [(1, 1, 3840), (2, 1, 2160), (3, 2, int.from_bytes(b"h265\0\0\0\0", "little")),
                                   (0, 1, 7), (11, 1, 7), (4, 3, 1)])  # type 0 and 11, flag 3: skipped
    assert render_mpp_sessions_summary(k.mpp) == (
        b"session iova range dump:\n"
        b"   0: 0x00000000fc000000..0x00000000ffad9fff (     60264 KiB)\n"
        b"   1: 0x00000000ffd80000..0x00000000ffdfffff (       512 KiB)\n"
        b"session: pid=1235 index=0\n"
        b" device: fdc38100.rkvdec-core\n"
        b" memory: 59 MiB\n"
        b"session iova range dump:\n"
        b"session: pid=3964 index=0\n"
        b" device: fdbd0000.rkvenc-core\n"
        b" memory: 0 MiB\n"
        + b"-" * 108 + b"\n"
        b"| session|  device|   width|  height|  format|\n"
        b"|       0|  RKVENC|    3840|    2160|    h265|\n")


def test_sessions_summary_5_10_is_the_guides_line_per_device() -> None:
    k = kernel("5.10")
    assert render_mpp_sessions_summary(k.mpp) == b""
    decoder_session(k, [FRAME_8K, 512 * KiB])
    decoder_session(k, [4096], pid=2000)
    assert render_mpp_sessions_summary(k.mpp) == b"fdc38100.rkvdec-core Total: 60780 KiB\n"


def test_indexes_count_per_device_and_never_reset() -> None:
    k = kernel()
    assert k.mpp is not None
    first = k.mpp.init(k.mpp.open(10, 10, DRIVER), RKVDEC)
    k.mpp.close(first)
    assert k.mpp.init(k.mpp.open(11, 11, DRIVER), RKVDEC).index == 1
    assert k.mpp.init(k.mpp.open(12, 12, DRIVER), RKVENC).index == 0
    with pytest.raises(KernelError) as refused:
        k.mpp.init(k.mpp.open(13, 13, DRIVER), 18)  # VEPU2: disabled in the RK3588 device tree
    assert refused.value.errno == errno.EINVAL


def test_a_freed_buffer_lives_attached_until_the_session_closes() -> None:
    k = kernel()
    assert k.mpp is not None
    (frame,) = decoder_session(k, [FRAME_8K])
    assert k.dmabufs.put(frame, APP) is False           # the application frees it...
    assert b"fdc38100.rkvdec-core" in render_rk_dmabuf_dev(k.dmabufs)  # ...the core still holds it
    assert k.dmabufs.total == FRAME_8K
    k.mpp.close_holder(DRIVER)
    assert k.dmabufs.total == 0 and k.mpp.sessions == {}


def test_past_40_buffers_the_least_recently_used_one_goes_but_not_one_this_task_uses() -> None:
    k = kernel()
    assert k.mpp is not None
    session = k.mpp.init(k.mpp.open(20, 20, DRIVER), RKVDEC)
    inodes = [k.dmabufs.heap_alloc(k.heaps["system"], 4096, None, APP).ino for _ in range(43)]
    k.mpp.import_task(session, inodes[:41])             # 41: the check runs before each import
    k.mpp.import_task(session, [inodes[0]])             # the oldest is used again: now the newest
    k.mpp.import_task(session, inodes[41:43])           # two more: the two least recently used go
    assert session.buffers is not None
    assert list(session.buffers) == [*inodes[3:41], inodes[0], inodes[41], inodes[42]]
    assert not k.dmabufs.buffer(inodes[1]).attachments


def test_sgt_shows_no_system_heap_buffer_and_the_iova_of_rk_cma_heap_ones() -> None:
    k = kernel()
    assert k.mpp is not None
    decoder_session(k, [FRAME_8K])
    session = next(iter(k.mpp.sessions.values()))
    cma = k.dmabufs.heap_alloc(k.heaps["rk-dma-heap-cma"], 8192, "1234-player", APP)
    k.mpp.import_task(session, [cma.ino])
    sgt = render_rk_dmabuf_sgt(k.dmabufs).split(b"\n")
    assert len(sgt) == 4 and sgt[2].endswith(  # the rkvdec core's IOVA, right under its RCB window
        b"rk-dma-heap-cma           8 KiB   0: 0x00000000ffdfe000..0x00000000ffdfffff (         8 KiB)")


def test_dma_heap_info_lists_the_rk_heaps_buffers_and_contiguous_allocations() -> None:
    k = kernel()
    heap = k.heaps["rk-dma-heap-cma"]
    other = k.dmabufs.heap_alloc(k.heaps["system"], 4096, "1-system", APP)     # another heap: not listed
    camera = k.dmabufs.heap_alloc(heap, 8192, "1234-camera", APP)
    k.dmabufs.attach(camera.ino, "fdc38100.rkvdec-core", APP)
    k.dmabufs.attach(camera.ino, "fdd90000.vop", APP)
    k.dmabufs.heap_alloc(heap, 4096, None, APP)
    k.dmabufs.export("rk-dma-heap-cma", k.heaps["cma"], 4096, "x", APP)  # the name, not the heap's memory
    heap.allocate_contig(16 * KiB, "rkisp")
    assert other.ino == 41 and camera.ino == 42
    assert render_rk_dma_heap_info([heap], k.dmabufs) == (
        b"dma-heap:<rk-dma-heap-cma> -dmabuf"
        b"dma-heap:<rk-dma-heap-cma> -dmabuf\ti_ino = 43\n"
        b"\tAlloc by ((null)              )\t[0x0000000010802000-0x0000000010802fff]\t0x0000000000001000 (4 KiB)\n"
        b"\t\tAttached Devices:\n"
        b"Total 0 devices attached\n\n"
        b"dma-heap:<rk-dma-heap-cma> -dmabuf\ti_ino = 42\n"
        b"\tAlloc by (1234-camera         )\t[0x0000000010800000-0x0000000010801fff]\t0x0000000000002000 (8 KiB)\n"
        b"\t\tAttached Devices:\n"
        b"\t\tfdd90000.vop\n"
        b"\t\tfdc38100.rkvdec-core\n"
        b"Total 2 devices attached\n\n"
        b"dma-heap:<rk-dma-heap-cma> -non dmabuf\n"
        b"\tAlloc by (rkisp               )\t[0x0000000010803000-0x0000000010806fff]\t0x0000000000004000 (16 KiB)\n"
        b"\nTotal : 0x7000 (28 KiB)\n")
    assert render_rk_total_pools_kb() == b"0\n"
    # What memtrackfs capture/load and metrics read back: every record, the unfinished one apart.
    info = parse_dma_heap_info(render_rk_dma_heap_info([heap], k.dmabufs).decode())
    assert info == DmaHeapInfo(
        [HeapAllocation("rk-dma-heap-cma", "(null)", 0x10802000, 4 * KiB, 43, ()),
         HeapAllocation("rk-dma-heap-cma", "1234-camera", 0x10800000, 8 * KiB, 42,
                        ("fdd90000.vop", "fdc38100.rkvdec-core")),
         HeapAllocation("rk-dma-heap-cma", "rkisp", 0x10803000, 16 * KiB, None, ())],
        ["rk-dma-heap-cma"], 28 * KiB)


@pytest.mark.parametrize("text", [
    "", "Total : 0x0 (0 KiB)\n", "junk\nTotal : 0x0 (0 KiB)\n",
    "dma-heap:<h> -non dmabuf\n\tAlloc by (x)\t[0x0000000000001000-0x0000000000001fff]\t0x0000000000002000 (8 KiB)\n"
    "\nTotal : 0x0 (0 KiB)\n",  # a range that is not its size
    "dma-heap:<h> -dmabuf\ti_ino = 5\n\tAlloc by (x)\t[0x0000000000001000-0x0000000000001fff]\t0x0000000000001000 "
    "(4 KiB)\n\t\tAttached Devices:\n\t\tvop\nTotal 2 devices attached\n\n\nTotal : 0x0 (0 KiB)\n",  # 1 device, not 2
])
def test_a_malformed_dma_heap_info_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_dma_heap_info(text)


def test_the_constant_files() -> None:
    k = kernel("6.1")
    assert render_mpp_supports_cmd() == (
        b"------------- SUPPORT CMD -------------\n"
        b"QUERY_HW_SUPPORT:     0x00000000\nQUERY_HW_ID:          0x00000001\n"
        b"QUERY_CMD_SUPPORT:    0x00000002\nQUERY_BUTT:           0x00000003\n----\n"
        b"INIT_CLIENT_TYPE:     0x00000100\nINIT_TRANS_TABLE:     0x00000102\nINIT_BUTT:            0x00000103\n----\n"
        b"SET_REG_WRITE:        0x00000200\nSET_REG_READ:         0x00000201\n"
        b"SET_REG_ADDR_OFFSET:  0x00000202\nSEND_BUTT:            0x00000205\n----\n"
        b"POLL_HW_FINISH:       0x00000300\nPOLL_BUTT:            0x00000302\n----\n"
        b"RESET_SESSION:        0x00000400\nTRANS_FD_TO_IOVA:     0x00000401\nRELEASE_FD:           0x00000402\n"
        b"SEND_CODEC_INFO:      0x00000403\nCONTROL_BUTT:         0x00000404\n")
    assert render_mpp_supports_device(k.mpp) == (
        b"---- SUPPORT DEVICES ----\n"
        b"DEVICE[ 1]:VDPU2     \n"
        b"DEVICE[ 3]:VDPU2_PP  \n"
        b"DEVICE[ 4]:AV1DEC    \n"
        b"DEVICE[ 9]:RKVDEC    HW_ID:0x53813f05\n"
        b"DEVICE[12]:AVSPLUS_DEC\n"
        b"DEVICE[13]:RKJPEGD   \n"
        b"DEVICE[16]:RKVENC    HW_ID:0x50603312\n"
        b"DEVICE[19]:VEPU2     \n"
        b"DEVICE[28]:IEP2      \n")
    assert render_mpp_version(k.mpp) == (b"53c0acb01bce author: Tao Huang 2024-12-09 video: rockchip: mpp: "
                                         b"Fix typos in Rockchip copyright notices\n")


def test_load_asks_for_an_interval_then_lists_every_core() -> None:
    k = kernel("6.1")
    assert k.mpp is not None
    assert render_mpp_load(k.mpp) == (b"please set load_interval first!!!\n"
                                      b"e.g. set 1000ms to load_interval:\n"
                                      b"echo 1000 > /proc/mpp_service/load_interval\n")
    k.mpp.load_interval = 1000
    k.mpp.load["fdc38100.rkvdec-core"] = (1234, 5678)
    lines = render_mpp_load(k.mpp).split(b"\n")
    assert lines[0] == b"fdb50400.vdpu             load:   0.00% utilization:   0.00%"
    assert b"fdc38100.rkvdec-core      load:  12.34% utilization:  56.78%" in lines
    assert lines[-2] == b"av1d-master               load:   0.00% utilization:   0.00%" and len(lines) == 14
    loads = parse_mpp_load(render_mpp_load(k.mpp).decode())
    assert len(loads) == 13 and loads["fdc38100.rkvdec-core"] == (1234, 5678) and loads["av1d-master"] == (0, 0)
    k.mpp.load_interval = 0
    assert parse_mpp_load(render_mpp_load(k.mpp).decode()) == {}


@pytest.mark.parametrize("written, value", [(b"1000\n", 1000), (b"0x3e8", 1000), (b"01750", 1000), (b"+7", 7),
                                            (b"4294967295", 0xFFFFFFFF), (b"0", 0)])
def test_u32_files_take_any_base(written: bytes, value: int) -> None:
    assert parse_u32_write(written) == value


@pytest.mark.parametrize("written, code", [(b"", errno.EINVAL), (b"\n", errno.EINVAL), (b" 1", errno.EINVAL),
                                           (b"0x", errno.EINVAL), (b"08", errno.EINVAL), (b"1\n\n", errno.EINVAL),
                                           (b"-1", errno.EINVAL), (b"4294967296", errno.ERANGE)])
def test_u32_files_refuse_what_kstrtou32_refuses(written: bytes, code: int) -> None:
    with pytest.raises(KernelError) as refused:
        parse_u32_write(written)
    assert refused.value.errno == code


def test_u32_files_print_as_signed() -> None:
    assert render_u32(1) == b"1\n" and render_u32(0xFFFFFFFF) == b"-1\n"
