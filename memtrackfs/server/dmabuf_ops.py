"""Socket operations on dma-bufs and DMA heaps (see ``model.dmabuf`` and ``model.heaps``).

The connection is the process: the references and attachments it takes are its own, the way a
process holds dma-buf fds, and ``release_dmabufs`` drops them all when the peer goes away.
Fields are checked before the kernel lock is taken; the model refuses before it changes anything.
"""
from __future__ import annotations

import errno
import itertools
from typing import Any, Callable, Optional

from memtrackfs import processes
from memtrackfs.errors import KernelError
from memtrackfs.kernel import Kernel
from memtrackfs.model.dmabuf import DmaBuf, check_buffer_name, rockchip_default_name
from memtrackfs.model.heaps import (
    MAX_BUFFER_BYTES,
    PAGE_SIZE,
    CmaHeap,
    Heap,
    default_cma_heap,
)
from memtrackfs.server import fields
from memtrackfs.server.session import Session, caller_context

Reply = dict[str, Any]
_ID_MAX = 2**63 - 1
RK_DMA_HEAP_NAME_LEN = 16  # rk-dma-heap.h: the kstrndup() of a contiguous allocation's owner


def _leader_comm(tgid: int) -> Optional[str]:
    """The command name of the thread-group leader tgid, as the kernel would see it."""
    name = processes.comm(tgid)
    if name is None:
        return None
    return "".join(ch if ch.isprintable() else "?" for ch in name)


def _buffer_name(session: Session, request: dict[str, Any]) -> Optional[str]:
    """The request's ``name`` (null: no name), else Rockchip's ``"<tgid>-<leader comm>"``."""
    if "name" in request:
        name = fields.optional_name(request)
    else:
        tgid, _ = caller_context(session, request)
        comm = fields.optional_name(request, "comm")
        if comm is None:
            # A tgid from the request may name no process here (a simulated one): fall back to the
            # name the client gave itself.
            comm = _leader_comm(tgid) or session.client or "unknown"
        name = rockchip_default_name(tgid, comm)
    check_buffer_name(name)
    return name


def _heap(kernel: Kernel, name: str) -> Heap:
    heap = kernel.heaps.get(name)
    if heap is None:
        raise KernelError(errno.ENOENT, f"no heap named {name!r}; heaps: {', '.join(kernel.heaps)}")
    return heap


def _exported(buf: DmaBuf) -> Reply:
    return {"buffer": buf.ino, "size": buf.size, "name": buf.name}


def _optional(request: dict[str, Any], key: str) -> Optional[int]:
    """``ino`` (the inode number to give the buffer) or ``address`` (where its memory lies in a
    CMA heap): how ``memtrackfs load`` recreates a captured board; null or absent: the kernel's choice."""
    return fields.integer(request, key, 1, 2**64 - 1) if request.get(key) is not None else None


def op_heap_alloc(session: Session, request: dict[str, Any]) -> Reply:
    """DMA_HEAP_IOCTL_ALLOC: a buffer from a heap, exported with the heap's name as exporter."""
    heap_name = fields.name(request, "heap")
    nbytes = fields.integer(request, "bytes", 1, MAX_BUFFER_BYTES)
    name = _buffer_name(session, request)
    ino, address = _optional(request, "ino"), _optional(request, "address")
    with session.kernel.transaction() as k:
        heap = _heap(k, heap_name)
        return _exported(k.dmabufs.heap_alloc(heap, nbytes, name, session, ino=ino, address=address))


def op_export(session: Session, request: dict[str, Any]) -> Reply:
    """A driver exports its own buffer (vb2's EXPBUF, DRM PRIME). Its memory comes from ``heap``:
    by default the board's CMA heap, where dma-contig allocators get theirs, or the first heap if
    none. ``cache_sgt_mapping``: the exporter's dma_buf_ops keep mapped scatter lists (DRM PRIME
    does, videobuf2 does not), which rk_dmabuf/sgt then shows."""
    exporter = fields.name(request, "exporter")
    heap_name = fields.optional_name(request, "heap")
    nbytes = fields.integer(request, "bytes", 1, MAX_BUFFER_BYTES)
    caches_sgt = fields.boolean(request, "cache_sgt_mapping")
    name = _buffer_name(session, request)
    ino, address = _optional(request, "ino"), _optional(request, "address")
    with session.kernel.transaction() as k:
        heap = _heap(k, heap_name) if heap_name is not None else default_cma_heap(k.heaps)
        return _exported(k.dmabufs.export(exporter, heap, nbytes, name, session, caches_sgt,
                                          ino=ino, address=address))


def _buffer_id(request: dict[str, Any]) -> int:
    return fields.integer(request, "buffer", 1, _ID_MAX)


def _attachment_id(request: dict[str, Any]) -> int:
    return fields.integer(request, "attachment", 1, _ID_MAX)


def op_get(session: Session, request: dict[str, Any]) -> Reply:
    """Take one more reference (as receiving the buffer's fd does)."""
    ino = _buffer_id(request)
    with session.kernel.transaction() as k:
        return {"count": k.dmabufs.get(ino, session).refs}


def op_put(session: Session, request: dict[str, Any]) -> Reply:
    """Drop one of this connection's references (close an fd); the last one releases the buffer."""
    ino = _buffer_id(request)
    with session.kernel.transaction() as k:
        return {"released": k.dmabufs.put(ino, session)}


def op_attach(session: Session, request: dict[str, Any]) -> Reply:
    """dma_buf_attach() by an importer for ``device``; the attachment holds a reference."""
    ino = _buffer_id(request)
    device = fields.name(request, "device")
    with session.kernel.transaction() as k:
        return {"attachment": k.dmabufs.attach(ino, device, session).id}


def op_detach(session: Session, request: dict[str, Any]) -> Reply:
    attachment_id = _attachment_id(request)
    with session.kernel.transaction() as k:
        return {"released": k.dmabufs.detach(attachment_id, session)}


def _segments(request: dict[str, Any]) -> Optional[list[tuple[int, int]]]:
    """``segments``: ``[[address, length], ...]``, where a device behind an IOMMU sees the buffer
    (they must cover its size); absent or null: its memory, as a device without one sees it."""
    value = request.get("segments")
    if value is None:
        return None
    if (not isinstance(value, list) or not value
            or not all(isinstance(pair, list) and len(pair) == 2 and all(type(v) is int for v in pair)
                       and 0 <= pair[0] and 0 < pair[1] <= MAX_BUFFER_BYTES and pair[0] + pair[1] <= 2**64
                       for pair in value)):
        raise KernelError(errno.EINVAL, "field 'segments' must be a non-empty list of [address, length] with "
                                        f"a length of 1..{MAX_BUFFER_BYTES} and the range below 2^64")
    return [(address, length) for address, length in value]


def op_map(session: Session, request: dict[str, Any]) -> Reply:
    """dma_buf_map_attachment(): the scatter list the device sees."""
    attachment_id = _attachment_id(request)
    requested = _segments(request)
    with session.kernel.transaction() as k:
        segments = k.dmabufs.map(attachment_id, session, requested)
    return {"segments": [{"address": address, "length": length} for address, length in segments]}


def op_unmap(session: Session, request: dict[str, Any]) -> Reply:
    attachment_id = _attachment_id(request)
    with session.kernel.transaction() as k:
        k.dmabufs.unmap(attachment_id, session)
    return {}


def _heap_info(kernel: Kernel, heap: Heap) -> Reply:
    info: Reply = {"name": heap.name, "kind": heap.kind, "capacity": heap.capacity,
                   "used": heap.used, "free": heap.capacity - heap.used,
                   "rockchip": heap.rockchip, "bitmap": heap is kernel.bitmap_heap}
    if heap.area is not heap:
        info["shares"] = heap.area.name  # one memory under several heap names
    area = heap.area
    if isinstance(area, CmaHeap):
        ranges = area.free_ranges()
        info.update(base=area.base, free_ranges=len(ranges),
                    largest_free=max((pages for _, pages in ranges), default=0) * PAGE_SIZE)
    return info


def op_heaps(session: Session, request: dict[str, Any]) -> Reply:
    """Every heap: capacity and usage in bytes; for CMA heaps the base and fragmentation too."""
    k = session.kernel
    with k.lock:  # a read: no transaction (README Locking rule 1)
        return {"heaps": [_heap_info(k, heap) for heap in k.heaps.values()]}


def op_buffers(session: Session, request: dict[str, Any]) -> Reply:
    """Every live buffer, newest first, with the references this connection holds on each."""
    k = session.kernel
    with k.lock:  # a read: no transaction (README Locking rule 1)
        held = k.dmabufs.held_by(session)
        buffers = [{"buffer": buf.ino, "exporter": buf.exporter, "size": buf.size, "name": buf.name,
                    "count": buf.refs, "held": held.get(buf.ino, 0),
                    "attachments": [{"attachment": a.id, "device": a.device, "mapped": a.mapped}
                                    for a in buf.newest_attachments()]}
                   for buf in k.dmabufs.newest_first()]
        return {"buffers": buffers, "total": k.dmabufs.total, "peak": k.dmabufs.peak}


_allocation_ids = itertools.count(1)


def op_dma_alloc(session: Session, request: dict[str, Any]) -> Reply:
    """dma_alloc_coherent() or a vb2 dma-contig/dma-sg plane: heap memory without a dma-buf.

    It counts in the heap's usage (and can fail with ENOMEM) but in no dma-buf view; the
    connection owns it until ``dma_free`` or until it closes, as a driver's memory goes with it.
    """
    heap_name = fields.optional_name(request, "heap")
    nbytes = fields.integer(request, "bytes", 1, MAX_BUFFER_BYTES)
    owner = fields.optional_name(request, "name")
    chosen = session.kernel.heaps.get(heap_name) if heap_name is not None else None  # the dict never changes
    if owner is None and chosen is not None and chosen.rockchip:
        # rk_dma_heap_alloc_contig_pages() records who took it: the caller's name, else current->comm.
        owner = _leader_comm(session.peer_pid) or session.client or "unknown"
    owner = (owner or "")[:RK_DMA_HEAP_NAME_LEN]
    address = _optional(request, "address")
    with session.kernel.transaction() as k:
        heap = _heap(k, heap_name) if heap_name is not None else default_cma_heap(k.heaps)
        allocation = heap.allocate_contig(nbytes, owner, address)
        allocation_id = next(_allocation_ids)
        session.allocations[allocation_id] = allocation
        return {"allocation": allocation_id, "heap": heap.name}


def op_dma_free(session: Session, request: dict[str, Any]) -> Reply:
    allocation_id = fields.integer(request, "allocation", 1, _ID_MAX)
    with session.kernel.transaction():
        allocation = session.allocations.pop(allocation_id, None)
        if allocation is None:
            raise KernelError(errno.ENOENT, f"this connection holds no allocation {allocation_id}")
        allocation.release()
    return {}


def release_dmabufs(session: Session, k: Kernel) -> None:
    """The connection ended (inside the closing transaction): its dma-buf references go as a
    dead process's fds close (unreferenced buffers are released), and its heap allocations."""
    k.dmabufs.release_holder(session)
    for allocation in session.allocations.values():
        allocation.release()
    session.allocations.clear()


DMABUF_OPS: dict[str, Callable[[Session, dict[str, Any]], Reply]] = {
    "heap_alloc": op_heap_alloc,
    "export": op_export,
    "get": op_get,
    "put": op_put,
    "attach": op_attach,
    "detach": op_detach,
    "map": op_map,
    "unmap": op_unmap,
    "heaps": op_heaps,
    "buffers": op_buffers,
    "dma_alloc": op_dma_alloc,
    "dma_free": op_dma_free,
}
