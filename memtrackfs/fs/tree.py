"""The mount's tree: every emulated path, mirroring the real ones under the mount point."""
from __future__ import annotations

import errno
import os
from typing import Callable, Optional

from memtrackfs.errors import KernelError
from memtrackfs.fs.entries import (
    DeviceFile,
    Directory,
    Entry,
    GeneratedFile,
    KmsgFile,
    Symlink,
)
from memtrackfs.kernel import Kernel
from memtrackfs.model.dmabuf import DmaBuf, DmaBufTable
from memtrackfs.model.heaps import first_cma_heap
from memtrackfs.model.tracker import Node
from memtrackfs.render.dma_buf import (
    render_dma_buf_bufinfo,
    render_dma_buf_exporter_name,
    render_dma_buf_size,
)
from memtrackfs.render.dynamic_debug import (
    apply_dynamic_debug_query,
    render_dynamic_debug_control,
)
from memtrackfs.render.memtrack import render_memtrack
from memtrackfs.render.rk_dma_heap import render_rk_dma_heap_alloc_bitmap
from memtrackfs.render.rk_dmabuf import (
    render_rk_dmabuf_dev,
    render_rk_dmabuf_peak,
    render_rk_dmabuf_sgt,
    render_rk_dmabuf_size,
    write_rk_dmabuf_peak,
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


def _proc_dir(kernel: Kernel, proc_union: Optional[str]) -> Directory:
    dmabufs = kernel.dmabufs
    cma = first_cma_heap(kernel.heaps)
    # Rockchip shows the bitmap of its one (default) CMA heap.
    rk_dma_heap = {} if cma is None else {"alloc_bitmap": GeneratedFile(lambda: render_rk_dma_heap_alloc_bitmap(cma))}
    own: dict[str, Entry] = {
        "rk_dmabuf": Directory({
            "size": GeneratedFile(lambda: render_rk_dmabuf_size(dmabufs)),
            "peak": GeneratedFile(lambda: render_rk_dmabuf_peak(dmabufs),
                                  lambda data: write_rk_dmabuf_peak(dmabufs, data)),
            "dev": GeneratedFile(lambda: render_rk_dmabuf_dev(dmabufs)),
            "sgt": GeneratedFile(lambda: render_rk_dmabuf_sgt(dmabufs)),
        }),
        "rk_dma_heap": Directory(rk_dma_heap),
    }
    if proc_union is None:
        return Directory(own)
    return _proc_union_dir(own, proc_union)


def _proc_union_dir(own: dict[str, Entry], real_proc: str) -> Directory:
    """proc/ as ``memtrackfs run`` mounts it over /proc: our entries, then every real /proc entry
    as a link to ``real_proc/NAME``, where the run binds the real procfs. The links resolve in the
    reader's namespace, so ``self`` is the reader and ``<pid>/`` the real process directory.

    The daemon reads its own /proc, the real procfs: it runs outside the run's namespace, so it
    never reads this mount (which would deadlock). ``lookup`` and ``names`` run under Kernel.lock:
    a procfs lookup or listing is quick and never waits on memtrackfs, so the lock stays short.
    """
    def lookup(name: str) -> Optional[Entry]:
        return Symlink(f"{real_proc}/{name}") if os.path.lexists(f"/proc/{name}") else None

    def names() -> list[str]:
        # Ours win: on a Rockchip host the real /proc/rk_dmabuf would otherwise show twice.
        return [name for name in os.listdir("/proc") if name not in own]

    return Directory(own, lookup=lookup, names=names)


def build_tree(kernel: Kernel, proc_union: Optional[str] = None) -> Directory:
    """The whole tree; ``proc_union``: see ``_proc_union_dir`` (None: proc/ holds only ours)."""
    tracker, log = kernel.tracker, kernel.log

    def device_lookup(name: str) -> Optional[Entry]:
        node = kernel.devices.nodes.get(name)
        return None if node is None else DeviceFile(node, kernel.driver_timeout)

    def memtrack_lookup(name: str) -> Optional[Entry]:
        root = tracker.roots.get(name)
        return None if root is None else _memtrack_file(root)

    debug = Directory({
        "v4l2-memtrack": Directory(mode=0o755, lookup=memtrack_lookup, names=lambda: list(tracker.roots)),
        "dynamic_debug": Directory({
            "control": GeneratedFile(lambda: render_dynamic_debug_control(log.sites),
                                     lambda data: apply_dynamic_debug_query(log.sites, data)),
        }, mode=0o755),
        "dma_buf": Directory({
            "bufinfo": GeneratedFile(lambda: render_dma_buf_bufinfo(kernel.dmabufs)),
        }, mode=0o755),
    }, mode=0o700)  # debugfs is root-only on a real board
    return Directory({
        "dev": Directory({"kmsg": KmsgFile()}, mode=0o755, lookup=device_lookup,
                         names=lambda: list(kernel.devices.nodes)),
        "proc": _proc_dir(kernel, proc_union),
        "sys": Directory({"kernel": Directory({
            "debug": debug,
            "dmabuf": Directory({"buffers": _dmabuf_buffers_dir(kernel.dmabufs)}, mode=0o755),
        }, mode=0o755)}, mode=0o755),
    }, mode=0o755)
