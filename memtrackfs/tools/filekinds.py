"""What ``memtrackfs capture`` reads and ``memtrackfs load`` recreates, one kind of file at a time.

A ``FileKind`` names the files it captures (paths under the root), parses them (every problem
a ValueError naming the file, before anything changes) and applies what it parsed to a mount
through a ``Loader`` (the socket, the mount's own files). A new kind of kernel file is one more
entry in ``KINDS``: its paths, its parser, its loader, and a sentence on what cannot be recreated.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

from memtrackfs import paths
from memtrackfs.tools.kmsg import read_kmsg_lines
from memtrackfs.tools.parse import (
    BufInfo,
    CmaBitmap,
    DmaHeapInfo,
    TrackedNode,
    parse_alloc_bitmap,
    parse_bufinfo,
    parse_dma_heap_info,
    parse_first_number,
    parse_memtrack,
    parse_mpp_load,
    parse_mpp_sessions_summary,
    parse_rk_dmabuf_dev,
    parse_rk_dmabuf_sgt,
    parse_u32,
)

Files = dict[str, str]  # relative path -> text, as captured


class Loader(Protocol):
    """What a kind's loader may use: the socket, the mount, and a word for the user."""

    mount: str
    placed: list[tuple[int, int]]  # (address, bytes) of CMA memory loaded buffers and allocations took

    def call(self, op: str, **fields: Any) -> dict[str, Any]: ...

    def note(self, text: str) -> None: ...


def read_file(path: str) -> str:
    """A kernel file's text, read() to EOF as cat does (never sendfile: a procfs size is 0)."""
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="surrogateescape")


def read_log(path: str) -> str:
    return "".join(line + "\n" for line in read_kmsg_lines(path))  # what is there, without waiting for more


@dataclass(frozen=True)
class FileKind:
    name: str
    paths: Callable[[str], list[str]]              # the files to capture under a root
    parse: Callable[[Files], Any]                  # -> what apply needs (None: nothing of this kind)
    apply: Optional[Callable[[Loader, Any], None]]  # None: captured as evidence, not recreated
    not_recreated: str
    read: Callable[[str], str] = read_file


def _parse(files: Files, path: str, parser: Callable[[str], Any]) -> Any:
    try:
        return parser(files[path])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _listing(root: str, directory: str) -> list[str]:
    try:
        return [f"{directory}/{name}" for name in os.listdir(os.path.join(root, directory))]
    except OSError:
        return []


# -- v4l2-memtrack trees -------------------------------------------------------------------------

def _tracker_paths(root: str) -> list[str]:
    return _listing(root, paths.MEMTRACK_DIR)  # in the directory's order: the roots' creation order


def _tracker_parse(files: Files) -> list[tuple[str, list[TrackedNode]]]:
    prefix = paths.MEMTRACK_DIR + "/"
    return [(path[len(prefix):], _parse(files, path, parse_memtrack)[1]) for path in files if path.startswith(prefix)]


def _own(nodes: list[TrackedNode], index: int) -> tuple[int, int]:
    """(own bytes, count) of node ``index``: what its line shows, less its children's usage."""
    node = nodes[index]
    children = 0
    has_children = False
    for other in nodes[index + 1:]:
        if other.depth <= node.depth:
            break
        if other.depth == node.depth + 1:
            children += other.usage
            has_children = True
    own = node.own if node.own is not None else node.usage - children
    if node.count is not None:
        return own, node.count
    # Not shown: 0 or 1 without children (1 if it holds bytes), 0 with children.
    return own, int(own > 0 and not has_children)


def _tracker_apply(loader: Loader, trees: list[tuple[str, list[TrackedNode]]]) -> None:
    existing = {root["name"] for root in loader.call("roots")["roots"]}
    taken = [name for name, _ in trees if name in existing]
    if taken:
        raise ValueError(f"the mount already has tracker roots {', '.join(taken)}: load into a fresh mount")
    for name, nodes in trees:
        handles: list[int] = []
        for index, node in enumerate(nodes):
            context = {"tgid": node.tgid, "pid": node.pid}
            del handles[node.depth:]
            if node.leaf:
                loader.call("add", node=handles[-1], bytes=node.usage, name=node.name, **context)
                continue
            if node.depth == 0:
                handle = loader.call("root", name=name, **context)["node"]
            else:
                handle = loader.call("node", parent=handles[-1], name=node.name, **context)["node"]
            handles.append(handle)
            own, count = _own(nodes, index)
            # count unnamed adds holding ``own`` bytes; a count of 0 with bytes is an add then a sub of 0.
            for n in range(max(count, 1 if own else 0)):
                loader.call("add", node=handle, bytes=own if n == 0 else 0)
            if own and not count:
                loader.call("sub", node=handle, bytes=0)


# -- dma-bufs ------------------------------------------------------------------------------------

PAGE = 4096
Runs = list[tuple[int, int]]  # (first page, pages)
Heaps = dict[str, dict[str, Any]]  # the mount's heaps by name, as the socket's ``heaps`` describes them


@dataclass
class Buffer:
    ino: Optional[int]
    exporter: str
    size: int
    name: Optional[str]
    count: int                  # references, or 0 if the files do not show them
    devices: tuple[str, ...]    # attached, newest first
    segments: tuple[tuple[int, int], ...]  # the mapping rk_dmabuf/sgt shows (its exporter keeps it), else ()
    address: Optional[int] = None  # where its memory starts, if a file shows it (dma_heap_info)

    @property
    def pages(self) -> int:
        return -(-self.size // PAGE)


@dataclass
class DmaBufState:
    buffers: list[Buffer]       # oldest first: the order to export them in
    peak_mib: Optional[int]
    used: Optional[Runs]        # the used pages of the CMA heap alloc_bitmap shows, where buffers were


def subtract(runs: Runs, taken: Runs) -> Runs:
    """The pages of ``runs`` that are not in ``taken``."""
    result = []
    for start, count in runs:
        pieces = [(start, start + count)]
        for first, length in taken:
            pieces = [part for lo, hi in pieces
                      for part in ((lo, min(hi, first)), (max(lo, first + length), hi)) if part[0] < part[1]]
        result += [(lo, hi - lo) for lo, hi in pieces]
    return result


def _dmabuf_paths(root: str) -> list[str]:
    found = [paths.DMA_BUF_BUFINFO, paths.RK_DMABUF_SIZE, paths.RK_DMABUF_PEAK, paths.RK_DMABUF_DEV,
             paths.RK_DMABUF_SGT]
    for directory in _listing(root, paths.DMABUF_SYSFS_BUFFERS):
        found += [f"{directory}/exporter_name", f"{directory}/size"]
    return found


def _dmabuf_parse(files: Files) -> Optional[DmaBufState]:
    peak = _parse(files, paths.RK_DMABUF_PEAK, parse_first_number) if paths.RK_DMABUF_PEAK in files else None
    dev = _parse(files, paths.RK_DMABUF_DEV, parse_rk_dmabuf_dev) if paths.RK_DMABUF_DEV in files else None
    sgt = _parse(files, paths.RK_DMABUF_SGT, parse_rk_dmabuf_sgt) if paths.RK_DMABUF_SGT in files else []
    segments = {entry.id: entry.segments for entry in sgt}
    if paths.DMA_BUF_BUFINFO in files:  # everything, exactly: sizes, names, references, inodes
        infos: list[BufInfo] = _parse(files, paths.DMA_BUF_BUFINFO, parse_bufinfo)
        # rk_dmabuf lists the same buffers in the same order: it tells which are mapped, and where.
        ids = [buf.id for buf in dev] if dev is not None and len(dev) == len(infos) else [""] * len(infos)
        buffers = [Buffer(info.ino, info.exporter, info.size, info.name, info.count, info.devices,
                          segments.get(rk_id, ())) for info, rk_id in zip(infos, ids)]
    elif dev is not None:  # Rockchip's view only: names and exporters cut at 16, sizes in KiB
        sysfs = sorted(_sysfs_buffers(files), reverse=True)  # newest (highest inode) first, as dev lists
        exact = len(sysfs) == len(dev)
        buffers = [Buffer(sysfs[i][0] if exact else None, sysfs[i][1] if exact else buf.exporter,
                          sysfs[i][2] if exact else buf.kib << 10, None if buf.name == "(null)" else buf.name, 0,
                          buf.devices, segments.get(buf.id, ())) for i, buf in enumerate(dev)]
    else:
        buffers = [Buffer(ino, exporter, size, None, 0, (), ()) for ino, exporter, size in
                   sorted(_sysfs_buffers(files), reverse=True)]
    if not buffers and peak is None:
        return None
    heap_info = _heap_info_parse(files)
    if heap_info is not None:  # the rk heaps' buffers: where each one's memory is
        addresses = {a.ino: a.address for a in heap_info[0].allocations if a.ino is not None}
        for buf in buffers:
            buf.address = addresses.get(buf.ino)
    bitmap = _heap_parse(files)
    used = None if bitmap is None else subtract([(0, len(bitmap.allocated))], bitmap.free_ranges())
    return DmaBufState(list(reversed(buffers)), peak, used)


def _sysfs_buffers(files: Files) -> list[tuple[int, str, int]]:
    prefix = paths.DMABUF_SYSFS_BUFFERS + "/"
    found = []
    for path, text in files.items():
        if path.startswith(prefix) and path.endswith("/size"):
            ino = path[len(prefix):].split("/")[0]
            exporter = files.get(f"{prefix}{ino}/exporter_name", "").rstrip("\n")
            found.append((int(ino), exporter, int(text)))
    return found


def _default_cma(heaps: Heaps) -> Optional[dict[str, Any]]:
    """Where a driver's export takes its memory when no heap is named: the first CMA heap outside
    Rockchip's rk_dma_heap, as the socket's ``export`` does."""
    return next((heap for heap in heaps.values() if heap["kind"] == "cma" and not heap["rockchip"]), None)


def _cma_area(heaps: Heaps, buf: Buffer) -> Optional[dict[str, Any]]:
    """The CMA heap whose memory a buffer will be in (a heap's own buffer: that heap's memory, a
    driver's export: the default CMA heap's); None for system memory, which places nothing."""
    heap = heaps.get(buf.exporter) or _default_cma(heaps)
    if heap is None or heap["kind"] != "cma":
        return None
    return heaps[heap.get("shares", heap["name"])]


def _inside(area: dict[str, Any], address: int, size: int) -> bool:
    offset = address - area["base"]
    return offset >= 0 and not offset % PAGE and offset + size <= area["capacity"]


def _pages(area: dict[str, Any], placed: list[tuple[int, int]]) -> Runs:
    """(first page, pages) in ``area`` of the (address, bytes) ranges that lie in it."""
    return [((address - area["base"]) // PAGE, -(-size // PAGE)) for address, size in placed
            if _inside(area, address, size)]


def _places(state: DmaBufState, heaps: Heaps, areas: list[Optional[dict[str, Any]]]) -> list[Optional[int]]:
    """Where each buffer in a CMA heap goes: where a file shows its memory (dma_heap_info; else a
    single-segment scatter list inside the heap: a device without an IOMMU sees the memory itself),
    the others of the heap alloc_bitmap shows first-fit into the pages it showed used; None:
    wherever the heap puts it."""
    places: list[Optional[int]] = [None] * len(state.buffers)
    placed: list[tuple[int, int]] = []
    for i, (buf, area) in enumerate(zip(state.buffers, areas)):
        known = buf.address if buf.address is not None else (buf.segments[0][0] if len(buf.segments) == 1 else None)
        if area is not None and known is not None and _inside(area, known, buf.pages * PAGE):
            places[i] = known
            placed.append((known, buf.pages * PAGE))
    bitmap = next((heap for heap in heaps.values() if heap["bitmap"]), None)
    if bitmap is None:
        return places
    gaps = subtract(state.used or [], _pages(bitmap, placed))
    for i, (buf, area) in enumerate(zip(state.buffers, areas)):
        if area is bitmap and places[i] is None:
            fit = next(((start, count) for start, count in gaps
                        if count >= buf.pages and (start + buf.pages) * PAGE <= bitmap["capacity"]), None)
            if fit is not None:
                places[i] = bitmap["base"] + fit[0] * PAGE
                gaps = subtract(gaps, [(fit[0], buf.pages)])
    return places


def _dmabuf_apply(loader: Loader, state: DmaBufState) -> None:
    heaps = {heap["name"]: heap for heap in loader.call("heaps")["heaps"]}
    areas = [_cma_area(heaps, buf) for buf in state.buffers]
    for buf, place in zip(state.buffers, _places(state, heaps, areas)):
        fields: dict[str, Any] = {"bytes": buf.size, "name": buf.name, "ino": buf.ino, "address": place}
        if buf.exporter in heaps:  # a heap's own buffer (DMA_HEAP_IOCTL_ALLOC) comes from that heap
            made = loader.call("heap_alloc", heap=buf.exporter, **fields)
        else:  # a driver's export; a mapping rk_dmabuf/sgt lists is one its exporter keeps (DRM PRIME)
            made = loader.call("export", exporter=buf.exporter, cache_sgt_mapping=bool(buf.segments), **fields)
        if place is not None:
            loader.placed.append((place, buf.pages * PAGE))
        attachments = [loader.call("attach", buffer=made["buffer"], device=device)["attachment"]
                       for device in reversed(buf.devices)]  # oldest first: the files list newest first
        if buf.segments and attachments:  # as the device saw it: its IOVA behind an IOMMU
            loader.call("map", attachment=attachments[-1], segments=[list(segment) for segment in buf.segments])
        refs = 1 + len(attachments)
        target = buf.count or refs
        for _ in range(target - refs):
            loader.call("get", buffer=made["buffer"])
        if target == refs - 1 and attachments:  # only the attachments hold it: the exporter let go
            loader.call("put", buffer=made["buffer"])
        elif target < refs - 1:
            loader.note(f"dma-buf {buf.ino}: {target} references shown, fewer than its {len(attachments)} attachments")
    _raise_peak(loader, state, heaps)


def _raise_peak(loader: Loader, state: DmaBufState, heaps: Heaps) -> None:
    """The peak moves only at export, and a reset sets it to 0: a short-lived buffer brings it
    up to the captured peak; a peak reset below the live total is a reset."""
    if state.peak_mib is None:
        return
    total = loader.call("buffers")["total"]
    wanted = state.peak_mib << 20
    if total >> 20 > state.peak_mib:
        with open(os.path.join(loader.mount, paths.RK_DMABUF_PEAK), "w") as peak:
            peak.write("0\n")  # as rk-peak.sh and Rockchip's guide do
        if state.peak_mib:
            loader.note(f"rk_dmabuf/peak: {state.peak_mib} MiB was reached after a reset, below the buffers' "
                        f"{total >> 20} MiB: only a reset (0) or a higher peak can be made again; it shows 0")
    elif wanted > total:
        heap = "system" if "system" in heaps else next(iter(heaps))
        buffer = loader.call("heap_alloc", heap=heap, bytes=wanted - total, name=None)["buffer"]
        loader.call("put", buffer=buffer)


# -- Rockchip's rk_dma_heap: dma_heap_info (its heaps' memory) ----------------------------------------

def _heap_info_parse(files: Files) -> Optional[tuple[DmaHeapInfo, int]]:
    """dma_heap_info (procfs, else its debugfs twin) and rk_total_pools_kb."""
    path = next((p for p in (paths.RK_DMA_HEAP_INFO, paths.RK_DMA_HEAP_INFO_DEBUGFS) if p in files), None)
    if path is None:
        return None
    pools = _parse(files, paths.RK_TOTAL_POOLS_KB, parse_first_number) if paths.RK_TOTAL_POOLS_KB in files else 0
    return _parse(files, path, parse_dma_heap_info), pools


def _heap_info_apply(loader: Loader, parsed: tuple[DmaHeapInfo, int]) -> None:
    """Its dma-bufs are the dma-buf kind's (placed where this file shows them); here the memory
    drivers took without a dma-buf (rk_dma_heap_alloc_contig_pages), under its owner's name and
    at its address, which a mount with the board's rk heaps (``--board rk3588``) can take."""
    info, pools_kib = parsed
    heaps = {heap["name"]: heap for heap in loader.call("heaps")["heaps"]}
    named = dict.fromkeys([a.heap for a in info.allocations] + info.foreign)
    missing = [name for name in named if not heaps.get(name, {}).get("rockchip")]
    if missing:
        loader.note(f"rk_dma_heap/dma_heap_info: this mount has no rk_dma_heap {', '.join(missing)} "
                    "(mount with --board rk3588): its allocations there are not made")
    for a in info.allocations:
        if a.ino is not None or a.heap in missing:
            continue
        area = heaps[heaps[a.heap].get("shares", a.heap)]
        address = a.address if area["kind"] == "cma" and _inside(area, a.address, a.size) else None
        if address is None:
            loader.note(f"rk_dma_heap/dma_heap_info: {a.owner}'s {a.size >> 10} KiB at {a.address:#x} lie outside "
                        f"this mount's {a.heap}: taken where the heap chooses")
        loader.call("dma_alloc", heap=a.heap, bytes=a.size, name=a.owner, address=address)
        if address is not None:
            loader.placed.append((address, a.size))
    if pools_kib:
        loader.note(f"rk_total_pools_kb: the board's heaps pooled {pools_kib} KiB; the emulated heaps keep no "
                    "page pools (it reads 0)")


# -- the CMA heap Rockchip shows -------------------------------------------------------------------

def _heap_parse(files: Files) -> Optional[CmaBitmap]:
    if paths.RK_DMA_HEAP_BITMAP not in files:
        return None
    return _parse(files, paths.RK_DMA_HEAP_BITMAP, parse_alloc_bitmap)


def _heap_apply(loader: Loader, bitmap: CmaBitmap) -> None:
    """Its size is the mount's (``--heap``, the board's); the pages the board's drivers held
    without a dma-buf (firmware, vb2 planes) and no other file accounts for are taken where
    alloc_bitmap showed them, so that it reads the same."""
    cma = next((heap for heap in loader.call("heaps")["heaps"] if heap["bitmap"]), None)
    if cma is None or cma["capacity"] != bitmap.total_kib << 10:
        have = "no CMA heap" if cma is None else f"{cma['capacity'] >> 20} MiB"
        loader.note(f"rk_dma_heap/alloc_bitmap: the board's CMA heap is {bitmap.total_kib >> 10} MiB, the mount's "
                    f"{have}: mount with --heap NAME={bitmap.total_kib >> 10}M (or the board's --board) to match")
        if cma is None:
            return
    used = subtract([(0, len(bitmap.allocated))], bitmap.free_ranges())
    rest = subtract(used, _pages(cma, loader.placed))
    if rest and cma["rockchip"]:
        loader.note(f"rk_dma_heap/alloc_bitmap: {sum(count for _, count in rest) * PAGE >> 10} KiB used that "
                    "dma_heap_info does not account for (captured at another moment?): taken by 'memtrackfs load'")
    for start, count in rest:
        if (start + count) * PAGE > cma["capacity"]:
            loader.note("rk_dma_heap/alloc_bitmap: pages past the mount's CMA heap are not taken")
            break
        loader.call("dma_alloc", heap=cma["name"], bytes=count * PAGE, address=cma["base"] + start * PAGE,
                    **({"name": "memtrackfs load"} if cma["rockchip"] else {}))


# -- Rockchip's mpp_service -------------------------------------------------------------------------

MPP_U32S = ("timing_en", "load_interval")  # the files a user writes (mpp_procfs_create_u32)


@dataclass
class MppState:
    fixed: dict[str, str]               # version, supports-cmd, supports-device: the BSP's, compared
    u32s: dict[str, int]                # timing_en, load_interval: written back
    load: dict[str, tuple[int, int]]    # each core's load and utilization (1/100 %), while shown
    sessions: dict[str, int]            # KiB each device's sessions held


def _mpp_paths(root: str) -> list[str]:
    return _listing(root, paths.MPP_SERVICE_DIR)


def _mpp_parse(files: Files) -> Optional[MppState]:
    prefix = paths.MPP_SERVICE_DIR + "/"
    mine = {path[len(prefix):]: path for path in files if path.startswith(prefix)}
    if not mine:
        return None
    state = MppState({}, {}, {}, {})
    for name, path in mine.items():
        if name in MPP_U32S:
            state.u32s[name] = _parse(files, path, parse_u32)
        elif name == "load":
            state.load = _parse(files, path, parse_mpp_load)
        elif name == "sessions-summary":
            state.sessions = _parse(files, path, parse_mpp_sessions_summary)[0]
        else:
            state.fixed[name] = files[path]
    return state


def _mpp_apply(loader: Loader, state: MppState) -> None:
    """The BSP's files are compared (the mount's --bsp must be the board's), the u32s written, the
    cores' load reported as a driver does (``mpp_load``). The sessions are not made: each is an
    open of dev/mpp_service by a process of the board, which its driver keeps; their buffers are
    the dma-bufs loaded, attached to the cores as captured."""
    directory = os.path.join(loader.mount, paths.MPP_SERVICE_DIR)
    if not os.path.isdir(directory):
        loader.note("proc/mpp_service: this mount has none (mount with --board rk3588): not loaded")
        return
    for name, text in state.fixed.items():
        try:
            same = read_file(os.path.join(directory, name)) == text
        except OSError:
            same = False
        if not same:
            loader.note(f"proc/mpp_service/{name}: the board's is not this mount's (mount with the board's --bsp)")
    for name, value in state.u32s.items():
        try:
            with open(os.path.join(directory, name), "w") as f:
                f.write(f"{value}\n")
        except OSError as exc:
            loader.note(f"proc/mpp_service/{name}: not written ({exc.strerror}): mount with the board's --bsp")
    cores = set(parse_mpp_load(read_file(os.path.join(directory, "load")))) if state.load else set()
    for core, (load, utilization) in state.load.items():
        if core in cores:
            loader.call("mpp_load", device=core, load=load, utilization=utilization)
        else:
            loader.note(f"proc/mpp_service/load: this mount's board has no core {core}")
    if state.sessions:
        held = ", ".join(f"{device} {kib} KiB" for device, kib in state.sessions.items())
        loader.note(f"proc/mpp_service/sessions-summary: the sessions ({held}) are not made again (an MPP "
                    "driver's, for the board's processes); their buffers are loaded, attached as captured")


# -- dynamic debug -----------------------------------------------------------------------------------

def _debug_parse(files: Files) -> Optional[list[str]]:
    text = files.get(paths.DYNAMIC_DEBUG_CONTROL)
    if text is None:
        return None
    enabled = []
    for line in text.splitlines()[1:]:
        words = line.split()
        if len(words) >= 3 and words[2] == "=p" and "]" in words[1]:
            enabled.append(words[1].split("]", 1)[1])  # "[module]function"
    return enabled


def _debug_apply(loader: Loader, functions: list[str]) -> None:
    control = os.path.join(loader.mount, paths.DYNAMIC_DEBUG_CONTROL)
    for function in functions:
        try:
            with open(control, "w") as f:
                f.write(f"func {function} +p\n")
        except OSError:
            pass  # a site this kernel does not have (a board's control lists thousands)


KINDS = [
    FileKind("v4l2-memtrack", _tracker_paths, _tracker_parse, _tracker_apply,
             "nothing: every tree's nodes, leaves, counts and tgid/pid are made again"),
    FileKind("dma-buf", _dmabuf_paths, _dmabuf_parse, _dmabuf_apply,
             "from a board, rk_dmabuf's %px addresses (here they follow the inode), CMA addresses outside the "
             "mount's heap, and, without bufinfo, the full names and reference counts"),
    FileKind("dma_heap_info", lambda root: [paths.RK_DMA_HEAP_INFO, paths.RK_DMA_HEAP_INFO_DEBUGFS,
                                            paths.RK_TOTAL_POOLS_KB],
             _heap_info_parse, _heap_info_apply,
             "nothing, given a mount with the board's rk heaps (--board rk3588); a board's page pools "
             "(rk_total_pools_kb reads 0)"),
    FileKind("rk_dma_heap", lambda root: [paths.RK_DMA_HEAP_BITMAP], _heap_parse, _heap_apply,
             "nothing, given a mount whose CMA heap alloc_bitmap shows has the board's size"),
    FileKind("dynamic_debug", lambda root: [paths.DYNAMIC_DEBUG_CONTROL], _debug_parse, _debug_apply,
             "the sites this kernel does not have"),
    FileKind("mpp_service", _mpp_paths, _mpp_parse, _mpp_apply,
             "its sessions (sessions-summary): the MPP driver's state for the board's processes; their "
             "buffers are loaded, attached to the codec cores as captured"),
    FileKind("kmsg", lambda root: [paths.KMSG], lambda files: None, None,
             "the kernel log: kept in the capture as evidence, not replayed", read_log),
]
