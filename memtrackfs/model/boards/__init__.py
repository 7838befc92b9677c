"""Board profiles: which kernel files a board has, its DMA heaps, its devices, its BSP.

One module per board family holds its facts with their sources (``imx8``, ``rk3588``);
``union`` is the default profile, every emulated file at once. ``board(name, bsp)`` looks one up.
The profiles are pure data: the mount (``memtrackfs.fs.tree``) decides from ``Board.files`` which
paths exist, the kernel builds the heaps, and vpu_sim learns the board from the socket's greeting.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field, replace
from typing import Optional

from memtrackfs.errors import KernelError
from memtrackfs.model.heaps import HeapSpec

# The groups of kernel files a board may have (``Board.files``).
MEMTRACK = "v4l2-memtrack"    # debugfs v4l2-memtrack/<root> and dynamic_debug/control (NXP's RFC)
RK_DMABUF = "rk_dmabuf"       # proc/rk_dmabuf/{size,peak,dev,sgt} (drivers/soc/rockchip/rk_dmabuf_procfs.c)
RK_HEAP_BITMAP = "rk_dma_heap/alloc_bitmap"  # proc/rk_dma_heap/alloc_bitmap (rk-cma-heap.c)
RK_DMA_HEAP = "rk_dma_heap"   # proc/rk_dma_heap/dma_heap_info, its debugfs twin, sys/kernel/rk_dma_heap/
MPP_SERVICE = "mpp_service"   # proc/mpp_service/ (drivers/video/rockchip/mpp/mpp_service.c)
# Every board has the upstream views: debugfs dma_buf/bufinfo, sysfs kernel/dmabuf/buffers/, dev/kmsg.


@dataclass(frozen=True)
class MppDevice:
    """A device registered with mpp_service (``srv->sub_devices[type]``)."""

    type: int               # enum MPP_DEVICE_TYPE
    type_name: str          # mpp_device_name[type], what supports-device and the encoder table show
    dev_name: str           # dev_name() of the core that registered: sessions and attachments name it
    hw_id: int = 0          # mpp_hw_info.hw_id read at probe; 0 where no source gives it (not shown)
    has_priv: bool = False  # the driver has init_session, so sessions-summary lists its sessions
    dumps_session: bool = False  # the driver has dump_session: the encoder table
    max_buffers: int = 40   # session_max_buffers: imported buffers kept before the LRU one goes
    iommu_domain: str = ""  # devices naming the same domain share one IOVA space
    reserved_iova: tuple[tuple[int, int], ...] = ()  # (start, size) taken out of the domain at probe


@dataclass(frozen=True)
class MppBoard:
    """The board's mpp_service: its devices, and what its BSP's proc files look like."""

    devices: tuple[MppDevice, ...]
    load_cores: tuple[str, ...]   # the `load` file's lines: task queues in order, then their cores
    files: tuple[str, ...]        # the files mpp_procfs_init() creates in this BSP
    summary: str                  # sessions-summary's form: "guide" (5.10) or "dump" (6.1)
    version: str                  # mpp_version (the `version` file, without its newline)
    timing_en: int                # timing_en's initial value

    def device(self, device_type: int) -> Optional[MppDevice]:
        return next((d for d in self.devices if d.type == device_type), None)


@dataclass(frozen=True)
class Board:
    name: str
    title: str
    files: frozenset[str]
    heaps: tuple[HeapSpec, ...]
    display: str                      # the display controller's device name
    vpu: str                          # the vpu_sim driver that serves it: "amphion" or "mpp"
    bitmap_heap: Optional[str] = None  # the CMA heap proc/rk_dma_heap/alloc_bitmap shows (None: the first)
    bsp: Optional[str] = None
    bsps: dict[str, MppBoard] = field(default_factory=dict)  # --bsp choices

    @property
    def mpp(self) -> Optional[MppBoard]:
        return self.bsps.get(self.bsp) if self.bsp is not None else None

    def has(self, files: str) -> bool:
        return files in self.files


def _registry() -> dict[str, Board]:
    from memtrackfs.model.boards import imx8, rk3588, union
    return {b.name: b for b in (union.UNION, imx8.IMX8QXP, imx8.IMX8QM, rk3588.RK3588)}


BOARD_NAMES = ("union", "imx8qxp", "imx8qm", "rk3588")
DEFAULT_BOARD = "union"


def board(name: str = DEFAULT_BOARD, bsp: Optional[str] = None) -> Board:
    """The profile of ``name``, with ``bsp`` (default: the board's own) for boards that have one."""
    found = _registry().get(name)
    if found is None:
        raise KernelError(errno.EINVAL, f"unknown board {name!r}; boards: {', '.join(BOARD_NAMES)}")
    if bsp is None:
        return found
    if not found.bsps:
        raise KernelError(errno.EINVAL, f"board {name} has no BSP kernel choice (--bsp is for rk3588)")
    if bsp not in found.bsps:
        raise KernelError(errno.EINVAL, f"board {name}: --bsp must be one of {', '.join(found.bsps)}, not {bsp!r}")
    return replace(found, bsp=bsp)
