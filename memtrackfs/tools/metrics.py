"""``memtrackfs metrics``: every figure of the kernel files in the Prometheus text format.

For node_exporter's textfile collector (print, or write a file atomically) or scraped over HTTP
(``--listen``). Like snapshot it reads the files under a root (``/`` on a board), anew for each
scrape: the v4l2-memtrack trees (each tracker's total, each instance's usage with its device,
process and pid, and what instances of exited processes still hold), Rockchip's dma-buf total
and peak, the dma-bufs per exporter (sysfs stats, else debugfs bufinfo, else rk_dmabuf/dev), the
CMA heap Rockchip shows (alloc_bitmap: size, used, free, largest free range), Rockchip's
rk_dma_heap heaps (dma_heap_info: their dma-bufs and the memory drivers took without one) and
mpp_service (the memory each codec device's sessions hold, their number where the BSP lists
them, each core's load). A file that is not there is left out. The format and the HTTP server
are prometheus_client's.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from typing import Callable, Iterator, Optional, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from memtrackfs import paths
from memtrackfs.model.heaps import ROCKCHIP_CMA_HEAP
from memtrackfs.processes import comm, identify
from memtrackfs.tools.parse import (
    parse_alloc_bitmap,
    parse_bufinfo,
    parse_dma_heap_info,
    parse_first_number,
    parse_memtrack,
    parse_mpp_load,
    parse_mpp_sessions_summary,
    parse_rk_dmabuf_dev,
)

PAGE = 4096
T = TypeVar("T")


def read_text(root: str, relative: str) -> Optional[str]:
    """A kernel file's text; None if it is not there or not readable (debugfs as a user)."""
    try:
        with open(os.path.join(root, relative), "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return None


def parsed(root: str, relative: str, parse: Callable[[str], T]) -> Optional[T]:
    """A kernel file, parsed; None if it is not there; ValueError naming it if it is malformed."""
    text = read_text(root, relative)
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError(f"{os.path.join(root, relative)}: {exc}") from None


class KernelFilesCollector(Collector):
    def __init__(self, root: str) -> None:
        self.root = root

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._trackers()
        yield from self._rockchip()
        yield from self._exporters()
        yield from self._cma()
        yield from self._rk_heaps()
        yield from self._mpp()

    def _trackers(self) -> Iterator[GaugeMetricFamily]:
        total = GaugeMetricFamily("v4l2_memtrack_total_bytes", "A v4l2-memtrack root's total usage",
                                  labels=["device"])
        instance = GaugeMetricFamily(
            "v4l2_memtrack_instance_bytes", "Usage of a node right under a tracker root (an instance: an "
            "open file of the device), by the process that made it; n numbers nodes with the same labels",
            labels=["device", "node", "process", "pid", "tgid", "n"])
        orphaned = GaugeMetricFamily("v4l2_memtrack_orphaned_bytes",
                                     "Usage of instances whose process has exited: memory a driver still holds",
                                     labels=["device"])
        directory = os.path.join(self.root, paths.MEMTRACK_DIR)
        try:
            roots = sorted(os.listdir(directory))
        except OSError:
            roots = []
        for device in roots:
            tree = parsed(directory, device, parse_memtrack)
            if tree is None:
                continue  # removed between the listing and the read
            usage, nodes = tree
            total.add_metric([device], usage)
            seen: Counter = Counter()
            left = 0
            for node in nodes:
                if node.depth != 1 or node.leaf:
                    continue
                running = node.tgid > 0 and identify(node.tgid) is not None
                labels = (device, node.name or "", (comm(node.tgid) or "") if running else "", str(node.pid),
                          str(node.tgid))
                instance.add_metric([*labels, str(seen[labels])], node.usage)
                seen[labels] += 1
                if node.tgid > 0 and not running:
                    left += node.usage
            orphaned.add_metric([device], left)
        yield from (total, instance, orphaned)

    def _rockchip(self) -> Iterator[GaugeMetricFamily]:
        for name, unit, what in (("size", 1 << 10, "Rockchip's total of live dma-bufs (rk_dmabuf/size)"),
                                 ("peak", 1 << 20, "Rockchip's dma-buf peak since its last reset (rk_dmabuf/peak)")):
            number = parsed(self.root, f"{paths.RK_DMABUF_DIR}/{name}", parse_first_number)
            if number is not None:
                yield GaugeMetricFamily(f"rk_dmabuf_{name}_bytes", what, value=number * unit)

    def _buffers(self) -> Optional[list[tuple[str, int]]]:
        """(exporter, bytes) of every live dma-buf, from the most exact file there is."""
        directory = os.path.join(self.root, paths.DMABUF_SYSFS_BUFFERS)
        if os.path.isdir(directory):
            found = []
            for ino in os.listdir(directory):
                exporter, size = (read_text(directory, f"{ino}/{f}") for f in ("exporter_name", "size"))
                if exporter is not None and size is not None:  # else released meanwhile
                    found.append((exporter.rstrip("\n"), int(size)))
            return found
        bufinfo = parsed(self.root, paths.DMA_BUF_BUFINFO, parse_bufinfo)
        if bufinfo is not None:
            return [(buf.exporter, buf.size) for buf in bufinfo]
        dev = parsed(self.root, paths.RK_DMABUF_DEV, parse_rk_dmabuf_dev)
        if dev is not None:  # exporter names cut at 16 characters, sizes in KiB
            return [(buf.exporter, buf.kib << 10) for buf in dev]
        return None

    def _exporters(self) -> Iterator[GaugeMetricFamily]:
        buffers = self._buffers()
        if buffers is None:
            return
        count = GaugeMetricFamily("dmabuf_exporter_buffers", "Live dma-bufs of an exporter", labels=["exporter"])
        size = GaugeMetricFamily("dmabuf_exporter_bytes", "Bytes of an exporter's live dma-bufs", labels=["exporter"])
        counts: Counter = Counter()
        sizes: Counter = Counter()
        for exporter, nbytes in buffers:
            counts[exporter] += 1
            sizes[exporter] += nbytes
        for exporter in sorted(counts):
            count.add_metric([exporter], counts[exporter])
            size.add_metric([exporter], sizes[exporter])
        yield from (count, size)

    def _cma(self) -> Iterator[GaugeMetricFamily]:
        bitmap = parsed(self.root, paths.RK_DMA_HEAP_BITMAP, parse_alloc_bitmap)
        if bitmap is None:
            return
        # A Rockchip BSP (it has dma_heap_info) shows its rk_dma_heap CMA heap's bitmap, which
        # rk-dma-cma.c names; the other boards here show their first CMA heap's.
        heap = ROCKCHIP_CMA_HEAP if read_text(self.root, paths.RK_DMA_HEAP_INFO) is not None else "cma"
        ranges = bitmap.free_ranges()
        figures = (("size", "Size of the CMA heap", bitmap.total_kib << 10),
                   ("used", "Bytes allocated from it", bitmap.used_kib << 10),
                   ("free", "Bytes free in it", (bitmap.total_kib - bitmap.used_kib) << 10),
                   ("largest_free_range", "Its largest run of free pages: the largest contiguous allocation "
                                          "that can succeed", max((pages for _, pages in ranges), default=0) * PAGE))
        for name, what, value in figures:
            family = GaugeMetricFamily(f"cma_heap_{name}_bytes", f"{what} (rk_dma_heap/alloc_bitmap)", labels=["heap"])
            family.add_metric([heap], value)
            yield family

    def _rk_heaps(self) -> Iterator[GaugeMetricFamily]:
        info = parsed(self.root, paths.RK_DMA_HEAP_INFO, parse_dma_heap_info)
        if info is None:
            return
        buffers = GaugeMetricFamily("rk_dma_heap_buffers", "dma-bufs an rk_dma_heap heap allocated "
                                    "(rk_dma_heap/dma_heap_info)", labels=["heap"])
        buffer_bytes = GaugeMetricFamily("rk_dma_heap_buffer_bytes", "Bytes of those dma-bufs (dma_heap_info)",
                                         labels=["heap"])
        contig = GaugeMetricFamily("rk_dma_heap_contig_bytes", "Memory of an rk_dma_heap heap taken without a dma-buf "
                                   "(rk_dma_heap_alloc_contig_pages), by who took it (dma_heap_info)",
                                   labels=["heap", "owner"])
        counts: Counter = Counter()
        sizes: Counter = Counter()
        taken: Counter = Counter()
        for allocation in info.allocations:
            if allocation.ino is None:
                taken[allocation.heap, allocation.owner] += allocation.size
            else:
                counts[allocation.heap] += 1
                sizes[allocation.heap] += allocation.size
        for heap in sorted(counts):
            buffers.add_metric([heap], counts[heap])
            buffer_bytes.add_metric([heap], sizes[heap])
        for labels in sorted(taken):
            contig.add_metric(list(labels), taken[labels])
        yield from (buffers, buffer_bytes, contig)
        yield GaugeMetricFamily("rk_dma_heap_total_bytes", "Memory the rk_dma_heap heaps hold (dma_heap_info's Total)",
                                value=info.total)

    def _mpp(self) -> Iterator[GaugeMetricFamily]:
        summary = parsed(self.root, paths.MPP_SESSIONS_SUMMARY, parse_mpp_sessions_summary)
        if summary is not None:
            totals, sessions = summary
            memory = GaugeMetricFamily("mpp_service_session_bytes", "Bytes of the buffers a codec device's open "
                                       "MPP sessions hold (mpp_service/sessions-summary)", labels=["device"])
            for device in sorted(totals):
                memory.add_metric([device], totals[device] << 10)
            yield memory
            if read_text(self.root, paths.MPP_LOAD) is not None:  # the BSP that lists sessions (6.1)
                count = GaugeMetricFamily("mpp_service_sessions", "Open MPP sessions of a codec device "
                                          "(sessions-summary)", labels=["device"])
                for device, n in sorted(Counter(session.device for session in sessions).items()):
                    count.add_metric([device], n)
                yield count
        load = parsed(self.root, paths.MPP_LOAD, parse_mpp_load)
        if load:
            shares = (GaugeMetricFamily("mpp_service_core_load_ratio", "A codec core's load over the last "
                                        "load_interval (mpp_service/load)", labels=["core"]),
                      GaugeMetricFamily("mpp_service_core_utilization_ratio", "A codec core's utilization over "
                                        "the last load_interval (mpp_service/load)", labels=["core"]))
            for core, figures in load.items():
                for family, hundredths in zip(shares, figures):
                    family.add_metric([core], hundredths / 10000)
            yield from shares


def registry_for(root: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KernelFilesCollector(root))
    return registry


def exposition(root: str) -> bytes:
    """The metrics of the files under ``root`` in the text exposition format."""
    return generate_latest(registry_for(root))


def write_atomically(path: str, data: bytes) -> None:
    """As node_exporter's textfile collector asks: a whole file appears, never a half-written one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".metrics-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
