"""Rockchip's mpp_service: sessions, the dma-bufs each session imported, and the devices' IOVA
spaces, as drivers/video/rockchip/mpp/{mpp_common.c,mpp_iommu.c} keep them.

- ``open`` puts a session at the end of the service's list with ``pid`` = the opening thread's
  id (``current->pid``); ``init`` (MPP_CMD_INIT_CLIENT_TYPE) binds it to the device registered
  for that type, gives it the device's next ``index`` (a counter per device that never resets)
  and an empty dma session.
- ``import_task`` is one task's ``mpp_translate_reg_address()``: each fd found in a register is
  imported once per task. A buffer the session already has moves to the tail of its used list
  (least recently used first); a new one is attached to the device and mapped, at an IOVA the
  device's domain hands out, and appended. Before each import, a session over its device's
  ``max_buffers`` drops its least recently used buffer that this task does not use.
- Imported buffers stay attached and mapped (holding the dma-buf) until that eviction,
  ``release_fd``, ``reset`` or ``close``: a buffer its process freed lives on, counted in
  rk_dmabuf/size, while the session that used it is open.

Pure model: no locks, no I/O; the owner (``Kernel``) serialises every call. The dma-buf work
goes through ``DmaBufTable`` with the driver's connection as the attachments' holder.
"""
from __future__ import annotations

import errno
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Optional

from memtrackfs.errors import KernelError
from memtrackfs.model.boards import MppBoard, MppDevice
from memtrackfs.model.dmabuf import Attachment, DmaBufTable
from memtrackfs.model.heaps import PAGE_SIZE

MPP_DEVICE_BUTT = 32        # enum MPP_DEVICE_TYPE's end: client types at or past it are refused
MPP_SESSION_MAX_BUFFERS = 60  # a dma session's buffer slots (mpp_iommu.h)
ENC_INFO_BUTT = 11          # enum ENC_INFO_TYPE: width .. profile are 1..10
CODEC_INFO_FLAG_BUTT = 3    # NULL, NUMBER, STRING
IOVA_LIMIT = 1 << 32        # the codecs' 32-bit DMA mask
_IOVA_RANGE_CACHE_MAX_SIZE = 6  # iommu-dma rounds allocations under 2^(6-1) pages to a power of two


class IovaDomain:
    """An IOMMU domain's IOVA allocator: iova.c's alloc_iova() with size_aligned, as iommu-dma
    calls it: top-down below the DMA limit, each range aligned to the power of two its page count
    rounds up to. Ranges the driver reserved (rkvdec's RCB window) are never handed out."""

    def __init__(self, reserved: Iterable[tuple[int, int]] = (), limit: int = IOVA_LIMIT) -> None:
        self.limit = limit
        self._ranges: dict[int, int] = {start: start + size for start, size in reserved}  # start -> end

    def allocate(self, size: int) -> int:
        pages = -(-size // PAGE_SIZE)
        if pages < 1 << (_IOVA_RANGE_CACHE_MAX_SIZE - 1):
            pages = 1 << (pages - 1).bit_length()
        length = pages * PAGE_SIZE
        align = PAGE_SIZE << (pages - 1).bit_length()
        top = self.limit
        for start, end in sorted(self._ranges.items(), reverse=True) + [(0, PAGE_SIZE)]:
            candidate = (top - length) & ~(align - 1)
            if top >= length and candidate >= end:
                self._ranges[candidate] = candidate + length
                return candidate
            top = min(top, start)
        raise KernelError(errno.ENOMEM, f"IOMMU domain: no free IOVA range of {length} bytes below {self.limit:#x}")

    def free(self, iova: int) -> None:
        del self._ranges[iova]


@dataclass(eq=False)
class MppBuffer:
    """struct mpp_dma_buffer: one imported dma-buf, attached and mapped for the session's device."""
    ino: int
    attachment: Attachment
    iova: int
    size: int


@dataclass(eq=False)
class MppSession:
    id: int
    pid: int                                  # current->pid at open: the thread's id
    tgid: int                                 # its process (whose fds the registers name)
    holder: Hashable                          # the driver connection serving the file
    device: Optional[MppDevice] = None
    index: int = -1
    buffers: Optional["OrderedDict[int, MppBuffer]"] = None  # the dma session's used list, LRU first
    codec_info: dict[int, tuple[int, int]] = field(default_factory=dict)  # ENC_INFO type -> (flag, data)

    @property
    def listed(self) -> bool:
        """sessions-summary skips sessions without priv (no init_session) or device."""
        return self.device is not None and self.device.has_priv

    @property
    def memory(self) -> int:
        return sum(buf.size for buf in (self.buffers or {}).values())


class MppService:
    def __init__(self, board: MppBoard, dmabufs: DmaBufTable) -> None:
        self.board = board
        self.dmabufs = dmabufs
        self.sessions: dict[int, MppSession] = {}      # srv->session_list: open order
        self.timing_en = board.timing_en
        self.load_interval = 0
        self.load: dict[str, tuple[int, int]] = {}      # dev_name -> (load, utilization) in 1/100 %
        self._ids = itertools.count(1)
        self._session_index: dict[str, int] = {}       # per mpp_dev (types sharing a core share it)
        reserved: dict[str, set[tuple[int, int]]] = {}
        for device in board.devices:
            reserved.setdefault(device.iommu_domain, set()).update(device.reserved_iova)
        self._domains = {name: IovaDomain(ranges) for name, ranges in reserved.items()}

    def session(self, session_id: int, holder: Hashable) -> MppSession:
        session = self.sessions.get(session_id)
        if session is None or session.holder != holder:
            raise KernelError(errno.ENOENT, f"this driver has no mpp session {session_id}")
        return session

    # -- a session's life ----------------------------------------------------------------------

    def open(self, pid: int, tgid: int, holder: Hashable) -> MppSession:
        session = MppSession(next(self._ids), pid, tgid, holder)
        self.sessions[session.id] = session
        return session

    def init(self, session: MppSession, client_type: int) -> MppSession:
        """MPP_CMD_INIT_CLIENT_TYPE."""
        device = self.board.device(client_type) if 0 <= client_type < MPP_DEVICE_BUTT else None
        if device is None:
            raise KernelError(errno.EINVAL, f"no mpp device of client type {client_type} on this board")
        self._drop_buffers(session)
        index = self._session_index.get(device.dev_name, 0)
        self._session_index[device.dev_name] = index + 1
        session.device, session.index, session.buffers = device, index, OrderedDict()
        session.codec_info.clear()
        return session

    def close(self, session: MppSession) -> None:
        """release() of the session's file: mpp_session_deinit() destroys its dma session."""
        self._drop_buffers(session)
        del self.sessions[session.id]

    def close_holder(self, holder: Hashable) -> None:
        """The driver went away: its sessions go with it."""
        for session in [s for s in self.sessions.values() if s.holder == holder]:
            self.close(session)

    def reset(self, session: MppSession) -> None:
        """MPP_CMD_RESET_SESSION: the dma session starts empty again."""
        self._require_init(session)
        self._drop_buffers(session)
        session.buffers = OrderedDict()

    # -- buffers -------------------------------------------------------------------------------

    def import_task(self, session: MppSession, inodes: Iterable[int]) -> list[tuple[int, int]]:
        """One task's fds (dma-buf inodes, in register order): their (iova, size)."""
        self._require_init(session)
        assert session.device is not None and session.buffers is not None
        used: dict[int, MppBuffer] = {}
        for ino in inodes:
            if ino in used:
                continue  # mpp_task_attach_fd(): an fd seen earlier in this task is reused as is
            if len(session.buffers) > session.device.max_buffers:
                self._evict_one(session, used)
            buf = session.buffers.get(ino)
            if buf is not None:
                session.buffers.move_to_end(ino)
            else:
                buf = self._attach(session, ino)
            used[ino] = buf
        return [(buf.iova, buf.size) for buf in used.values()]

    def release_fd(self, session: MppSession, ino: int) -> None:
        """MPP_CMD_RELEASE_FD."""
        self._require_init(session)
        assert session.buffers is not None
        buf = session.buffers.pop(ino, None)
        if buf is None:
            raise KernelError(errno.EINVAL, f"dma-buf {ino} is not in this session")
        self._detach(session, buf)

    def set_codec_info(self, session: MppSession, items: Iterable[tuple[int, int, int]]) -> None:
        """MPP_CMD_SEND_CODEC_INFO: (type, flag, data) items; invalid ones are skipped, as the
        encoders' ioctl does (logging them)."""
        if not session.listed:
            raise KernelError(errno.EINVAL, "codec info needs an initialised encoder session")
        for info_type, flag, data in list(items)[:ENC_INFO_BUTT]:
            if 0 < info_type < ENC_INFO_BUTT and 0 < flag < CODEC_INFO_FLAG_BUTT:
                session.codec_info[info_type] = (flag, data & (2**64 - 1))

    def _require_init(self, session: MppSession) -> None:
        if session.device is None or session.buffers is None:
            raise KernelError(errno.EINVAL, "the mpp session has no client type yet (MPP_CMD_INIT_CLIENT_TYPE)")

    def _attach(self, session: MppSession, ino: int) -> MppBuffer:
        assert session.device is not None and session.buffers is not None
        if len(session.buffers) >= MPP_SESSION_MAX_BUFFERS:
            raise KernelError(errno.ENOMEM, f"the mpp session holds {MPP_SESSION_MAX_BUFFERS} buffers already")
        dmabuf = self.dmabufs.buffer(ino)
        domain = self._domains[session.device.iommu_domain]
        iova = domain.allocate(dmabuf.size)
        attachment = self.dmabufs.attach(ino, session.device.dev_name, session.holder)
        self.dmabufs.map(attachment.id, session.holder, ((iova, dmabuf.size),))
        buf = session.buffers[ino] = MppBuffer(ino, attachment, iova, dmabuf.size)
        return buf

    def _detach(self, session: MppSession, buf: MppBuffer) -> None:
        assert session.device is not None
        self._domains[session.device.iommu_domain].free(buf.iova)
        self.dmabufs.detach(buf.attachment.id, session.holder)

    def _evict_one(self, session: MppSession, busy: dict[int, MppBuffer]) -> None:
        assert session.buffers is not None
        for ino, buf in session.buffers.items():
            if ino not in busy:  # kref 1: no task of this session uses it
                del session.buffers[ino]
                self._detach(session, buf)
                return

    def _drop_buffers(self, session: MppSession) -> None:
        while session.buffers:
            _, buf = session.buffers.popitem(last=False)
            self._detach(session, buf)
