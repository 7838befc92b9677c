"""Rockchip RK3588 with its Linux BSP: Rockchip's rk_dmabuf, rk_dma_heap and mpp_service files,
the upstream dma-buf views, and no v4l2-memtrack. Sources: docs/spec/rockchip-rk3588.md.

Device names are ``dev_name()`` of the device-tree nodes, ``<first reg address>.<node name>``
(arch/arm64/boot/dts/rockchip/rk3588s.dtsi of armbian/linux-rockchip @ 04cc2e1a, confirmed by
RK3588 boot logs); the AV1 decoder's mpp device is its child ``av1d-master``.
"""
from memtrackfs.model.boards import (
    MPP_SERVICE,
    RK_DMA_HEAP,
    RK_DMABUF,
    RK_HEAP_BITMAP,
    Board,
    MppBoard,
    MppDevice,
)
from memtrackfs.model.heaps import (
    DEFAULT_SYSTEM_CAPACITY,
    ROCKCHIP_CMA_HEAP,
    HeapSpec,
    MiB,
)

DISPLAY = "fdd90000.vop"
DECODER = "fdc38100.rkvdec-core"   # core 0: the one registered with mpp_service; core 1 shares its IOMMU domain
DECODER_CORE1 = "fdc48100.rkvdec-core"
ENCODER = "fdbd0000.rkvenc-core"   # the ccu's main core
ENCODER_CORE1 = "fdbe0000.rkvenc-core"
JPEG_ENCODER_CORES = ("fdba0000.jpege-core", "fdba4000.jpege-core", "fdba8000.jpege-core", "fdbac000.jpege-core")

# enum MPP_DEVICE_TYPE (drivers/video/rockchip/mpp/mpp_common.h)
VDPU2, VDPU2_PP, AV1DEC, RKVDEC, AVSPLUS_DEC, RKJPEGD, RKVENC, VEPU2_JPEG, IEP2 = 1, 3, 4, 9, 12, 13, 16, 19, 28

# Hardware ids: only the codec cores' are known, from the ids MPP's user library matches them
# against to pick its HALs (HWID_VDPU38X in mpp/hal/rkdec/inc/vdpu34x.h, HWID_VEPU58X in
# mpp/hal/rkenc/common/vepu5xx.h); the others print no HW_ID, as a device whose id reads 0.
HWID_VDPU38X = 0x53813F05
HWID_VEPU58X = 0x50603312

# What registers with mpp_service on RK3588 (mpp_dev_register_srv(); vdpu2 also takes VDPU2_PP).
# has_priv/dumps_session: init_session and dump_session in the drivers' dev_ops; max_buffers:
# each driver's *_SESSION_MAX_BUFFERS. rkvdec reserves its RCB window in the shared domain:
# rockchip,rcb-iova = <0xfff00000 0x100000> (core 0) and <0xffe00000 0x100000> (core 1).
MPP_DEVICES = (
    MppDevice(VDPU2, "VDPU2", "fdb50400.vdpu", iommu_domain="vdpu"),
    MppDevice(VDPU2_PP, "VDPU2_PP", "fdb50400.vdpu", iommu_domain="vdpu"),
    MppDevice(AV1DEC, "AV1DEC", "av1d-master", iommu_domain="av1d"),
    MppDevice(RKVDEC, "RKVDEC", DECODER, hw_id=HWID_VDPU38X, has_priv=True, iommu_domain="rkvdec",
              reserved_iova=((0xFFE00000, 0x100000), (0xFFF00000, 0x100000))),
    MppDevice(AVSPLUS_DEC, "AVSPLUS_DEC", "fdb51000.avsd-plus", iommu_domain="vdpu"),
    MppDevice(RKJPEGD, "RKJPEGD", "fdb90000.jpegd", iommu_domain="jpegd"),
    MppDevice(RKVENC, "RKVENC", ENCODER, hw_id=HWID_VEPU58X, has_priv=True, dumps_session=True,
              iommu_domain="rkvenc"),
    MppDevice(VEPU2_JPEG, "VEPU2", JPEG_ENCODER_CORES[0], has_priv=True, dumps_session=True, max_buffers=20,
              iommu_domain="jpege"),
    MppDevice(IEP2, "IEP2", "fdbb0000.iep", max_buffers=20, iommu_domain="iep"),
)

# `load`: task queues by index (rockchip,taskqueue-node in the dtsi: vdpu/avsd 0, jpegd 1,
# jpege 2, iep 6, rkvenc 7, rkvdec 9, av1d 11), each queue's cores by core id.
LOAD_CORES = ("fdb50400.vdpu", "fdb51000.avsd-plus", "fdb90000.jpegd", *JPEG_ENCODER_CORES, "fdbb0000.iep",
              ENCODER, ENCODER_CORE1, DECODER, DECODER_CORE1, "av1d-master")

# The two BSP generations of mpp_procfs_init(), and a real RK3588's mpp_version for each
# (the string mpp_service prints at probe: boot logs of RK3588 boards).
BSP_5_10 = MppBoard(
    devices=MPP_DEVICES, load_cores=LOAD_CORES,
    # rockchip-toybrick/kernel @ 5e4901a5 (5.10): no load files, timing_en starts at 0.
    files=("version", "sessions-summary", "supports-cmd", "supports-device", "timing_en"),
    summary="guide",
    version="ea89a0945141 author: Yandong Lin 2023-12-20 video: rockchip: mpp: fix watch dog interrupt storm issue",
    timing_en=0)
BSP_6_1 = MppBoard(
    devices=MPP_DEVICES, load_cores=LOAD_CORES,
    # armbian/linux-rockchip @ 0183b322: load and load_interval; timing_en starts at 1.
    files=("version", "sessions-summary", "supports-cmd", "supports-device", "timing_en", "load", "load_interval"),
    summary="dump",
    version="53c0acb01bce author: Tao Huang 2024-12-09 video: rockchip: mpp: Fix typos in Rockchip copyright notices",
    timing_en=1)

# /dev/dma_heap: rk_system_heap.c registers system, system-dma32, system-uncached and
# system-uncached-dma32 over the same RAM; cma_heap.c registers cma and cma-uncached over the
# default CMA area, 8 MiB on RK3588 (rk3588-linux.dtsi: cma { size = <0x0 (8 * 0x100000)>;
# linux,cma-default; }). /dev/rk_dma_heap: rk-dma-heap-cma, 32 MiB without rk_dma_heap_cma=
# (RK_DMA_HEAP_CMA_DEFAULT_SIZE in rk-dma-cma.c), whose bitmap alloc_bitmap shows.
HEAPS = (
    HeapSpec("system", DEFAULT_SYSTEM_CAPACITY, "ram"),
    HeapSpec("system-dma32", DEFAULT_SYSTEM_CAPACITY, "ram"),
    HeapSpec("system-uncached", DEFAULT_SYSTEM_CAPACITY, "ram"),
    HeapSpec("system-uncached-dma32", DEFAULT_SYSTEM_CAPACITY, "ram"),
    HeapSpec("cma", 8 * MiB, "cma"),
    HeapSpec("cma-uncached", 8 * MiB, "cma"),
    HeapSpec(ROCKCHIP_CMA_HEAP, 32 * MiB),
)

RK3588 = Board(
    name="rk3588",
    title="Rockchip RK3588 (Linux BSP)",
    files=frozenset({RK_DMABUF, RK_HEAP_BITMAP, RK_DMA_HEAP, MPP_SERVICE}),
    heaps=HEAPS,
    display=DISPLAY,
    vpu="mpp",
    bitmap_heap=ROCKCHIP_CMA_HEAP,
    bsp="5.10",   # the Rockchip DMABUF guide's kernel
    bsps={"5.10": BSP_5_10, "6.1": BSP_6_1},
)
