"""The mount's tree: every emulated path, mirroring the real ones under the mount point."""
from __future__ import annotations

import errno
from typing import Callable, Optional

from memtrackfs.errors import KernelError
from memtrackfs.fs.context import caller_tgid
from memtrackfs.fs.entries import (
    DeviceFile,
    Directory,
    Entry,
    GeneratedFile,
    KmsgFile,
)
from memtrackfs.fs.sysfs_tree import sysfs_entries
from memtrackfs.kernel import Kernel
from memtrackfs.model.boards import (
    MEMTRACK,
    MPP_SERVICE,
    RK_DMA_HEAP,
    RK_DMABUF,
    RK_HEAP_BITMAP,
)
from memtrackfs.model.dmabuf import DmaBuf, DmaBufTable
from memtrackfs.model.kmsg import LEVEL_WARNING, KernelLog
from memtrackfs.model.mpp import MppService
from memtrackfs.model.tracker import Node
from memtrackfs.render.dma_buf import (
    render_dma_buf_bufinfo,
    render_dma_buf_exporter_name,
    render_dma_buf_size,
)
from memtrackfs.render.dynamic_debug import (
    USER_BUF_PAGE,
    parse_dynamic_debug_query,
    render_dynamic_debug_control,
)
from memtrackfs.render.memtrack import render_memtrack
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
    render_rk_dma_heap_alloc_bitmap,
    render_rk_dma_heap_info,
    render_rk_total_pools_kb,
)
from memtrackfs.render.rk_dmabuf import (
    parse_rk_dmabuf_peak_write,
    render_rk_dmabuf_dev,
    render_rk_dmabuf_peak,
    render_rk_dmabuf_sgt,
    render_rk_dmabuf_size,
)


def _memtrack_file(root: Node) -> GeneratedFile:
    def render() -> bytes:
        if not root.alive:
            # debugfs: reading a file whose owner removed it fails with EIO.
            raise KernelError(errno.EIO, "tracker root was destroyed")
        return render_memtrack(root)
    return GeneratedFile(render)


def _dmabuf_sysfs_dir(buf: DmaBuf) -> Directory:
    def attribute(render: Callable[[DmaBuf], bytes]) -> GeneratedFile:
        def read() -> bytes:
            if not buf.alive:
                # sysfs: a released buffer's kobject is gone and its open files answer ENODEV.
                raise KernelError(errno.ENODEV, f"dma-buf {buf.ino} was released")
            return render(buf)
        return GeneratedFile(read)
    return Directory({"exporter_name": attribute(render_dma_buf_exporter_name),
                      "size": attribute(render_dma_buf_size)}, mode=0o755)


def _dmabuf_buffers_dir(dmabufs: DmaBufTable) -> Directory:
    """sys/kernel/dmabuf/buffers: one directory per live buffer, named by its inode number."""
    def lookup(name: str) -> Optional[Entry]:
        if not (name.isascii() and name.isdigit()) or name != str(int(name)):
            return None
        buf = dmabufs.buffers.get(int(name))
        return None if buf is None else _dmabuf_sysfs_dir(buf)
    return Directory(mode=0o755, lookup=lookup, names=lambda: [str(ino) for ino in dmabufs.buffers])


def _read_only_0644(data: bytes) -> None:
    # proc_create(..., 0644, ...) with no .proc_write: the mode allows writing, procfs answers EIO.
    raise KernelError(errno.EIO, "this file has no write handler")


def _reset_peak(dmabufs: DmaBufTable, data: bytes) -> None:
    parse_rk_dmabuf_peak_write(data)
    dmabufs.reset_peak()


def _write_dynamic_debug_control(log: KernelLog, data: bytes) -> None:
    """ddebug_proc_write(): every query is checked before any applies (a bad write changes
    nothing); a write too long for the kernel's page is refused and logged as the kernel logs it."""
    try:
        changes = parse_dynamic_debug_query(log.sites, data)
    except KernelError as exc:
        if exc.errno == errno.E2BIG:
            log.emit(LEVEL_WARNING, f"dyndbg: expected <{USER_BUF_PAGE} bytes into control")
        raise
    log.set_debug_sites(changes)


def _mpp_u32(service: MppService, attribute: str) -> GeneratedFile:
    """mpp_procfs_create_u32(): a u32 of the service, read as ``%d``, written in any base."""
    return GeneratedFile(lambda: render_u32(getattr(service, attribute)),
                         lambda data: setattr(service, attribute, parse_u32_write(data)))


def _mpp_service_dir(service: MppService) -> Directory:
    """proc/mpp_service/: the files this BSP's mpp_procfs_init() creates."""
    files = {
        "version": GeneratedFile(lambda: render_mpp_version(service)),
        "sessions-summary": GeneratedFile(lambda: render_mpp_sessions_summary(service)),
        "supports-cmd": GeneratedFile(render_mpp_supports_cmd),
        "supports-device": GeneratedFile(lambda: render_mpp_supports_device(service)),
        "timing_en": _mpp_u32(service, "timing_en"),
        "load": GeneratedFile(lambda: render_mpp_load(service)),
        "load_interval": _mpp_u32(service, "load_interval"),
    }
    return Directory({name: files[name] for name in service.board.files})


def proc_entries(kernel: Kernel) -> dict[str, Entry]:
    """What the board adds to /proc: the one place that declares it (``memtrackfs run`` puts
    these at /proc beside procfs's own: ``sandbox.proc_union``)."""
    dmabufs, board = kernel.dmabufs, kernel.board
    own: dict[str, Entry] = {}
    if board.has(RK_DMABUF):
        own["rk_dmabuf"] = Directory({
            "size": GeneratedFile(lambda: render_rk_dmabuf_size(dmabufs)),
            "peak": GeneratedFile(lambda: render_rk_dmabuf_peak(dmabufs),
                                  lambda data: _reset_peak(dmabufs, data)),
            "dev": GeneratedFile(lambda: render_rk_dmabuf_dev(dmabufs)),
            "sgt": GeneratedFile(lambda: render_rk_dmabuf_sgt(dmabufs)),
        })
    rk_dma_heap: dict[str, Entry] = {}
    if board.has(RK_DMA_HEAP):
        rk_heaps = [heap for heap in kernel.heaps.values() if heap.rockchip]
        rk_dma_heap["dma_heap_info"] = GeneratedFile(lambda: render_rk_dma_heap_info(rk_heaps, dmabufs),
                                                     _read_only_0644)
    bitmap = kernel.bitmap_heap
    if bitmap is not None:
        # Rockchip shows the bitmap of its one CMA heap.
        rk_dma_heap["alloc_bitmap"] = GeneratedFile(lambda: render_rk_dma_heap_alloc_bitmap(bitmap))
    if board.has(RK_HEAP_BITMAP) or board.has(RK_DMA_HEAP):
        own["rk_dma_heap"] = Directory(rk_dma_heap)
    if board.has(MPP_SERVICE) and kernel.mpp is not None:
        own["mpp_service"] = _mpp_service_dir(kernel.mpp)
    return own


def build_tree(kernel: Kernel) -> Directory:
    """The whole tree, as the kernel's board has it."""
    tracker, log, board = kernel.tracker, kernel.log, kernel.board

    def device_lookup(name: str) -> Optional[Entry]:
        node = kernel.devices.nodes.get(name)
        return None if node is None else DeviceFile(node, kernel.driver_timeout)

    # One entry per root, kept across lookups: an open serves what the lookup before it measured
    # (GeneratedFile), so both must find the same entry, and opens of one state share its
    # rendering. Runs under Kernel.lock.
    memtrack_files: dict[str, tuple[Node, GeneratedFile]] = {}

    def memtrack_lookup(name: str) -> Optional[Entry]:
        root = tracker.roots.get(name)
        if root is None:
            return None
        kept = memtrack_files.get(name)
        if kept is None or kept[0] is not root:
            if len(memtrack_files) >= 2 * len(tracker.roots):  # prune seldom: linear over many roots
                for other, (node, _) in list(memtrack_files.items()):
                    if not node.alive:
                        del memtrack_files[other]
            kept = memtrack_files[name] = (root, _memtrack_file(root))
        return kept[1]

    debug: dict[str, Entry] = {}
    if board.has(MEMTRACK):
        debug["v4l2-memtrack"] = Directory(mode=0o755, lookup=memtrack_lookup, names=lambda: list(tracker.roots))
        debug["dynamic_debug"] = Directory({
            "control": GeneratedFile(lambda: render_dynamic_debug_control(log.sites),
                                     lambda data: _write_dynamic_debug_control(log, data)),
        }, mode=0o755)
    debug["dma_buf"] = Directory({"bufinfo": GeneratedFile(lambda: render_dma_buf_bufinfo(kernel.dmabufs))},
                                 mode=0o755)
    sys_kernel: dict[str, Entry] = {
        "dmabuf": Directory({"buffers": _dmabuf_buffers_dir(kernel.dmabufs)}, mode=0o755),
    }
    if board.has(RK_DMA_HEAP):
        rk_heaps = [heap for heap in kernel.heaps.values() if heap.rockchip]
        # rk_dma_heap_init_debugfs(): the same show as /proc's, at 0444.
        debug["rk_dma_heap"] = Directory({
            "dma_heap_info": GeneratedFile(lambda: render_rk_dma_heap_info(rk_heaps, kernel.dmabufs)),
        }, mode=0o755)
        sys_kernel["rk_dma_heap"] = Directory({"rk_total_pools_kb": GeneratedFile(render_rk_total_pools_kb)},
                                              mode=0o755)
    sys_kernel["debug"] = Directory(debug, mode=0o700)  # debugfs is root-only on a real board
    return Directory({
        "dev": Directory({"kmsg": KmsgFile(kernel)}, mode=0o755, lookup=device_lookup,
                         names=lambda: list(kernel.devices.nodes)),
        "proc": Directory(proc_entries(kernel)),
        "sys": Directory({"kernel": Directory(sys_kernel, mode=0o755), **sysfs_entries(kernel, caller_tgid)},
                         mode=0o755),
    }, mode=0o755)
