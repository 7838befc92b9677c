"""dma-buf objects: what exporters hand out, importers attach and map, and processes hold.

Semantics follow drivers/dma-buf/dma-buf.c with Rockchip's additions (RK BSP 5.10/6.1):

- A buffer lives while references to it are held: by processes (here: driver-socket
  connections, the ``holder`` of each reference, as a process holds dma-buf fds) and by each
  attachment (the importer's ``dma_buf_get()``). When the last one goes, the buffer is released
  and its memory goes back to its heap.
- Rockchip's running total rises at export and falls at release; the peak moves only at export
  (``peak = max(peak, total)``) and a reset sets it to 0, not to the total.
- Buffers and each buffer's attachments are listed newest first: the kernel adds both at the
  head of their lists.
- Inode numbers count up once per export, as since Linux 5.17 (a counter private to dma-buf,
  unique, so sysfs can name directories by it). An export may ask for a higher number (the
  ones skipped are exports elsewhere): how ``memtrackfs load`` recreates a captured board.

Pure model: no locks, no I/O. The owner (``Kernel``) serialises every call. A refused call
raises KernelError before changing anything.
"""
from __future__ import annotations

import errno
import itertools
from typing import Hashable, Iterator, Optional, Sequence

from memtrackfs.errors import KernelError
from memtrackfs.model.heaps import Allocation, Heap, Segment

NAME_MAX = 32        # Rockchip stores the buffer name in up to 32 characters
COMM_MAX = 15        # TASK_COMM_LEN - 1
LABEL_MAX = 64       # exporter and device names
# A booted board's display, GPU and camera stacks export buffers before any user does; numbering
# starts past them so the inodes look like a board's.
BOOT_EXPORTS = 40
# struct dma_buf comes from the kmalloc-512 slab of an arm64 kernel's linear map.
_SLAB_BASE, _SLAB_OBJECT, _SLAB_SLOTS = 0xFFFFFF8100000000, 512, 1 << 24
_SCATTER = 0x9E3779B1  # odd: a bijection on the slots, so pointers never collide


def _check_text(what: str, text: str, limit: int, spaces: bool) -> None:
    if not isinstance(text, str) or not text:
        raise KernelError(errno.EINVAL, f"{what} must be a non-empty string")
    if len(text) > limit:
        raise KernelError(errno.EINVAL, f"{what} {text[:limit]!r}... is longer than {limit} characters")
    if not text.isprintable() or (not spaces and any(ch.isspace() for ch in text)):
        raise KernelError(errno.EINVAL, f"{what} {text!r} contains a control character"
                                        f"{'' if spaces else ' or a space'}: refused, it could forge lines")


def check_label(what: str, text: str) -> None:
    """Exporter and device names: printable, no spaces (they are words in the views)."""
    _check_text(what, text, LABEL_MAX, spaces=False)


def check_buffer_name(name: Optional[str]) -> None:
    if name is not None:
        _check_text("buffer name", name, NAME_MAX, spaces=True)


def rockchip_default_name(tgid: int, comm: str) -> str:
    """The name Rockchip gives a buffer at export: ``"%d-%s"`` of tgid and leader comm."""
    return f"{tgid}-{comm[:COMM_MAX]}"[:NAME_MAX]


class DmaBuf:
    """One exported buffer: struct dma_buf and its file."""

    __slots__ = ("ino", "exporter", "name", "allocation", "refs", "attachments", "alive", "caches_sgt", "heap")

    # dma_buf_getfile() keeps only O_ACCMODE|O_NONBLOCK of the exporter's O_RDWR|O_CLOEXEC, and
    # alloc_file() sets FMODE_READ|FMODE_WRITE|FMODE_LSEEK|FMODE_OPENED.
    file_flags = 0o2
    file_mode = 0x80007

    def __init__(self, ino: int, exporter: str, name: Optional[str], allocation: Allocation,
                 caches_sgt: bool = False) -> None:
        self.ino = ino
        self.exporter = exporter
        self.name = name
        self.allocation = allocation
        self.refs = 0
        self.attachments: dict[Attachment, None] = {}  # oldest first; views show them reversed
        self.alive = True
        # The exporter's dma_buf_ops.cache_sgt_mapping: a mapped attachment keeps its scatter list.
        self.caches_sgt = caches_sgt
        self.heap: Optional[Heap] = None  # the DMA heap that exported it (DMA_HEAP_IOCTL_ALLOC), if any

    @property
    def size(self) -> int:
        return self.allocation.size

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self.allocation.segments

    @property
    def address(self) -> int:
        """The struct's kernel address, as ``%px`` shows it: stable, unique, slab-like."""
        return _SLAB_BASE + (self.ino * _SCATTER % _SLAB_SLOTS) * _SLAB_OBJECT

    def newest_attachments(self) -> Iterator["Attachment"]:
        return reversed(self.attachments)


class Attachment:
    """A device attached to a buffer by an importer; mapped or not.

    ``sgt`` is the kernel's ``attach->sgt``: the mapping an exporter that caches it keeps from
    the first map until detach (unmap leaves it), None for every other exporter.
    """

    __slots__ = ("id", "buffer", "device", "holder", "mapped", "sgt")

    def __init__(self, attachment_id: int, buffer: DmaBuf, device: str, holder: Hashable) -> None:
        self.id = attachment_id
        self.buffer = buffer
        self.device = device
        self.holder = holder
        self.mapped = False
        self.sgt: Optional[tuple[Segment, ...]] = None


class DmaBufTable:
    """Every live dma-buf of one kernel, the references held on them, and Rockchip's figures."""

    def __init__(self, first_inode: int = BOOT_EXPORTS + 1) -> None:
        self.buffers: dict[int, DmaBuf] = {}  # by inode, oldest first
        self.attachments: dict[int, Attachment] = {}
        self.total = 0
        self.peak = 0
        self._held: dict[Hashable, dict[int, int]] = {}  # holder -> {inode: references}
        self._next_inode = first_inode  # the number an export gets
        self._lowest_free = 1           # the lowest an export may ask for (none handed out yet)
        self._attachment_ids = itertools.count(1)

    def newest_first(self) -> Iterator[DmaBuf]:
        return reversed(self.buffers.values())

    def buffer(self, ino: int) -> DmaBuf:
        buf = self.buffers.get(ino)
        if buf is None:
            raise KernelError(errno.ENOENT, f"no live dma-buf has inode {ino} (never exported, or already released)")
        return buf

    # -- export and references ----------------------------------------------------------------

    def export(self, exporter: str, heap: Heap, nbytes: int, name: Optional[str], holder: Hashable,
               caches_sgt: bool = False, *, ino: Optional[int] = None, address: Optional[int] = None) -> DmaBuf:
        """Allocate from ``heap`` and export under ``exporter``; ``holder`` gets the one reference.
        ``ino``: this inode number rather than the next, if no buffer has had it or a later one;
        ``address``: the buffer's memory there (see ``Heap.allocate``)."""
        check_label("exporter name", exporter)
        check_buffer_name(name)
        if ino is not None and ino < self._lowest_free:
            raise KernelError(errno.EINVAL, f"dma-buf inodes count up: {ino} is below {self._lowest_free}, "
                                            "the lowest not handed out yet")
        allocation = heap.allocate(nbytes, address)
        buf = DmaBuf(self._next_inode if ino is None else ino, exporter, name, allocation, caches_sgt)
        self._lowest_free = buf.ino + 1
        self._next_inode = max(self._next_inode, buf.ino + 1)
        self.buffers[buf.ino] = buf
        self.total += buf.size
        self.peak = max(self.peak, self.total)
        self._hold(buf, holder)
        return buf

    def heap_alloc(self, heap: Heap, nbytes: int, name: Optional[str], holder: Hashable, *,
                   ino: Optional[int] = None, address: Optional[int] = None) -> DmaBuf:
        """DMA_HEAP_IOCTL_ALLOC: the heap exports the buffer under its own name."""
        buf = self.export(heap.name, heap, nbytes, name, holder, heap.caches_sgt, ino=ino, address=address)
        buf.heap = heap
        return buf

    def get(self, ino: int, holder: Hashable) -> DmaBuf:
        buf = self.buffer(ino)
        self._hold(buf, holder)
        return buf

    def put(self, ino: int, holder: Hashable) -> bool:
        """Drop one of holder's references; True if that released the buffer."""
        buf = self.buffer(ino)
        held = self._held.get(holder, {})
        count = held.get(ino, 0)
        if count == 0:
            raise KernelError(errno.EBADF, f"this connection holds no reference to dma-buf {ino} "
                                           f"(its references were all put already)")
        if count == 1:
            del held[ino]
        else:
            held[ino] = count - 1
        return self._unref(buf, 1)

    def held_by(self, holder: Hashable) -> dict[int, int]:
        """{inode: references} that holder holds."""
        return dict(self._held.get(holder, {}))

    def holders(self, ino: int) -> list[Hashable]:
        """Who holds references to a buffer (as processes hold its fds)."""
        return [holder for holder, held in self._held.items() if ino in held]

    def _hold(self, buf: DmaBuf, holder: Hashable) -> None:
        held = self._held.setdefault(holder, {})
        held[buf.ino] = held.get(buf.ino, 0) + 1
        buf.refs += 1

    def _unref(self, buf: DmaBuf, count: int) -> bool:
        buf.refs -= count
        if buf.refs:
            return False
        # dma_buf_release(): the last reference is gone.
        del self.buffers[buf.ino]
        buf.alive = False
        self.total -= buf.size
        buf.allocation.release()
        return True

    # -- attachments ---------------------------------------------------------------------------

    def attach(self, ino: int, device: str, holder: Hashable) -> Attachment:
        check_label("device name", device)
        buf = self.buffer(ino)
        attachment = Attachment(next(self._attachment_ids), buf, device, holder)
        self.attachments[attachment.id] = attachment
        buf.attachments[attachment] = None
        buf.refs += 1  # the importer's dma_buf_get() that an attach goes with
        return attachment

    def attachment(self, attachment_id: int, holder: Hashable) -> Attachment:
        attachment = self.attachments.get(attachment_id)
        if attachment is None:
            raise KernelError(errno.ENOENT, f"no attachment has id {attachment_id}")
        if attachment.holder != holder:
            raise KernelError(errno.EPERM, f"attachment {attachment_id} belongs to another connection")
        return attachment

    def detach(self, attachment_id: int, holder: Hashable) -> bool:
        """Detach (unmapping first, as dma_buf_detach() does); True if that released the buffer."""
        attachment = self.attachment(attachment_id, holder)
        buf = attachment.buffer
        del self.attachments[attachment.id]
        del buf.attachments[attachment]
        return self._unref(buf, 1)

    def map(self, attachment_id: int, holder: Hashable,
            segments: Optional[Sequence[tuple[int, int]]] = None) -> tuple[Segment, ...]:
        """dma_buf_map_attachment(): the scatter list as the device sees it: ``segments`` for a
        device behind an IOMMU (its IOVA range), else the memory's own (no IOMMU: DMA address =
        physical address)."""
        attachment = self.attachment(attachment_id, holder)
        if attachment.mapped:
            raise KernelError(errno.EBUSY, f"attachment {attachment_id} is already mapped: unmap it first")
        if segments is not None and sum(length for _, length in segments) != attachment.buffer.size:
            raise KernelError(errno.EINVAL, f"the segments map {sum(length for _, length in segments)} bytes, "
                                            f"not the buffer's {attachment.buffer.size}")
        attachment.mapped = True
        mapping = attachment.buffer.segments if segments is None else tuple(Segment(*s) for s in segments)
        if attachment.buffer.caches_sgt and attachment.sgt is None:
            attachment.sgt = mapping
        return mapping

    def unmap(self, attachment_id: int, holder: Hashable) -> None:
        attachment = self.attachment(attachment_id, holder)
        if not attachment.mapped:
            raise KernelError(errno.EINVAL, f"attachment {attachment_id} is not mapped")
        attachment.mapped = False

    # -- end of a holder -----------------------------------------------------------------------

    def release_holder(self, holder: Hashable) -> list[int]:
        """A process died: detach its attachments, drop its references. The inodes released."""
        released = []
        for attachment in [a for a in self.attachments.values() if a.holder == holder]:
            if self.detach(attachment.id, holder):
                released.append(attachment.buffer.ino)
        for ino, count in self._held.pop(holder, {}).items():
            buf = self.buffers[ino]
            if self._unref(buf, count):
                released.append(ino)
        return released

    def reset_peak(self) -> None:
        self.peak = 0
