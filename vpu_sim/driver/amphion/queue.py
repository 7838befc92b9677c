"""One videobuf2 queue of an instance: its buffers, their states and vb2's rules for moving them.

Only the bookkeeping lives here (which buffer is where, what QBUF/DQBUF/STREAMON accept and the
errno they answer, as ``videobuf2-core.c`` and ``videobuf2-v4l2.c`` do); what a buffer costs and
when one completes is the instance's business.
"""
from __future__ import annotations

import errno
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional, Sequence

from memtrackfs.errors import KernelError
from vpu_sim import uapi
from vpu_sim.driver.accounting import Held
from vpu_sim.driver.amphion import model as amphion
from vpu_sim.driver.amphion.formats import PixFormat
from vpu_sim.driver.memtrack import Handle

# v4l2-mem2mem adds this to CAPTURE offsets so one mmap() offset space serves both queues.
DST_QUEUE_OFF_BASE = 1 << 30


class BufState(Enum):
    DEQUEUED = "dequeued"   # owned by the application
    PREPARED = "prepared"   # still the application's, checked by PREPARE_BUF
    QUEUED = "queued"       # owned by the driver, waiting to be processed
    DONE = "done"           # processed, waiting for DQBUF


# Flags vb2 keeps from QBUF, per direction (__fill_vb2_buffer(), __copy_timestamp()); the state
# flags are its own and the cache hints are dropped without MMAP_CACHE_HINTS support.
_STATE_FLAGS = (uapi.V4L2_BUF_FLAG_QUEUED | uapi.V4L2_BUF_FLAG_DONE | uapi.V4L2_BUF_FLAG_ERROR
                | uapi.V4L2_BUF_FLAG_PREPARED | uapi.V4L2_BUF_FLAG_REQUEST_FD | uapi.V4L2_BUF_FLAG_TIMESTAMP_MASK
                | uapi.V4L2_BUF_FLAG_NO_CACHE_INVALIDATE | uapi.V4L2_BUF_FLAG_NO_CACHE_CLEAN | 0x1 | 0x80)
OUTPUT_FLAGS = (uapi.V4L2_BUF_FLAG_PFRAME | uapi.V4L2_BUF_FLAG_BFRAME | uapi.V4L2_BUF_FLAG_KEYFRAME
                | uapi.V4L2_BUF_FLAG_TIMECODE)
# v4l2_m2m_buf_copy_metadata(): what a CAPTURE buffer takes from the OUTPUT buffer it came from.
METADATA_FLAGS = uapi.V4L2_BUF_FLAG_TIMECODE | uapi.V4L2_BUF_FLAG_TSTAMP_SRC_MASK


@dataclass(frozen=True)
class Metadata:
    """What QBUF of an OUTPUT buffer carries to the CAPTURE buffer made from it."""
    timestamp: tuple[int, int] = (0, 0)
    flags: int = 0                  # TIMECODE and TSTAMP_SRC bits
    field: int = uapi.V4L2_FIELD_NONE
    timecode: bytes = bytes(16)


@dataclass(frozen=True)
class QueueRequest:
    """The caller's side of a QBUF or PREPARE_BUF: what vb2 checks and keeps."""
    memory: int
    bytesused: tuple[int, ...]
    data_offsets: tuple[int, ...]
    fds: tuple[int, ...]
    planes: int                     # entries of the caller's plane array
    flags: int = 0
    metadata: Metadata = Metadata()


@dataclass
class Buffer:
    index: int
    memory: int
    lengths: tuple[int, ...]       # plane sizes as vb2 reports them
    tracked: tuple[Held, ...]      # page-aligned planes added to the queue node (MMAP only)
    offsets: tuple[int, ...]       # mmap offsets of the planes
    state: BufState = BufState.DEQUEUED
    bytesused: tuple[int, ...] = ()
    data_offsets: tuple[int, ...] = ()
    fds: tuple[int, ...] = ()      # DMABUF: the fds of the last QBUF, echoed back as vb2 does
    flags: int = 0                 # KEYFRAME, PFRAME, LAST, TIMECODE, TSTAMP_SRC...
    metadata: Metadata = Metadata()
    sequence: int = 0
    prepared: bool = False         # PREPARE_BUF checked it: QBUF keeps what it checked
    pictures: int = 1              # OUTPUT: the pictures the driver makes of it

    @property
    def state_flags(self) -> int:
        return {BufState.DEQUEUED: uapi.V4L2_BUF_FLAG_PREPARED if self.prepared else 0,
                BufState.PREPARED: uapi.V4L2_BUF_FLAG_PREPARED,
                BufState.QUEUED: uapi.V4L2_BUF_FLAG_QUEUED,
                BufState.DONE: uapi.V4L2_BUF_FLAG_DONE}[self.state]

    @property
    def timestamp(self) -> tuple[int, int]:
        return self.metadata.timestamp


@dataclass
class Queue:
    buf_type: int
    node: Handle                   # the tracker node "output" or "capture"
    fmt: PixFormat
    min_buffers: int
    memory: int = 0                # 0 until REQBUFS/CREATE_BUFS picks a memory type
    buffers: list[Buffer] = field(default_factory=list)
    streaming: bool = False
    last_buffer_dequeued: bool = False
    sequence: int = 0
    _queued: deque[Buffer] = field(default_factory=deque)
    _done: deque[Buffer] = field(default_factory=deque)

    @property
    def is_output(self) -> bool:
        return self.buf_type == uapi.V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE

    @property
    def name(self) -> str:
        return "OUTPUT" if self.is_output else "CAPTURE"

    # -- buffer allocation bookkeeping -------------------------------------------------------

    def check_memory(self, memory: int) -> None:
        if memory not in (uapi.V4L2_MEMORY_MMAP, uapi.V4L2_MEMORY_DMABUF):
            raise KernelError(errno.EINVAL, f"memory type {memory} is not supported: the VPU's queues take "
                                            f"MMAP ({uapi.V4L2_MEMORY_MMAP}) or DMABUF ({uapi.V4L2_MEMORY_DMABUF})")

    def next_offset(self) -> int:
        """Where the next plane's mmap offset starts: after the last plane, page-aligned (vb2)."""
        if not self.buffers or not self.buffers[-1].offsets:
            return 0
        last = self.buffers[-1]
        return amphion.page_align(last.offsets[-1] + last.lengths[-1])

    def remove_all(self) -> list[Buffer]:
        removed, self.buffers = self.buffers, []
        self._queued.clear()
        self._done.clear()
        self.memory = 0
        return removed

    def buffer(self, index: int) -> Buffer:
        if not 0 <= index < len(self.buffers):
            raise KernelError(errno.EINVAL, f"{self.name} has {len(self.buffers)} buffers; there is no buffer {index}")
        return self.buffers[index]

    # -- QBUF / DQBUF ------------------------------------------------------------------------

    def check_planes(self, buf: Buffer, planes: int) -> None:
        """__verify_planes_array(): the caller's plane array must hold every plane."""
        if planes < len(buf.lengths) or planes > uapi.VIDEO_MAX_PLANES:
            raise KernelError(errno.EINVAL, f"buffer {buf.index} has {len(buf.lengths)} planes; "
                                            f"the plane array has {planes} entries")

    def _check(self, buf: Buffer, request: QueueRequest) -> None:
        """__verify_planes_array(), __verify_length() and the memory type, as vb2 checks a QBUF."""
        if request.memory != self.memory:
            raise KernelError(errno.EINVAL, f"{self.name} buffers use memory type {self.memory}, "
                                            f"not {request.memory}")
        self.check_planes(buf, request.planes)
        if not self.is_output:
            return
        for plane, (used, offset, length) in enumerate(zip(request.bytesused, request.data_offsets, buf.lengths)):
            used = used or length  # vb2 treats 0 as "the whole plane" (deprecated, clients rely on it)
            if used > length:
                raise KernelError(errno.EINVAL, f"plane {plane}: bytesused {used} exceeds its length {length}")
            if offset and offset >= used:
                raise KernelError(errno.EINVAL, f"plane {plane}: data_offset {offset} is not below "
                                                f"bytesused {used}")

    def _keep(self, buf: Buffer, request: QueueRequest) -> None:
        """What vb2 keeps of a checked QBUF or PREPARE_BUF (__fill_vb2_buffer())."""
        flags = request.flags & ~_STATE_FLAGS
        if self.is_output:
            buf.bytesused = tuple(used or length for used, length in zip(request.bytesused, buf.lengths))
            buf.data_offsets = tuple(request.data_offsets[:len(buf.lengths)])
            buf.flags = flags & ~uapi.V4L2_BUF_FLAG_TIMECODE
            # vpu_vb2_buf_out_validate(): a field left ANY is NONE.
            buf.metadata = Metadata((0, 0), 0, request.metadata.field or uapi.V4L2_FIELD_NONE)
        else:
            buf.flags = flags & ~(OUTPUT_FLAGS | uapi.V4L2_BUF_FLAG_LAST | uapi.V4L2_BUF_FLAG_TSTAMP_SRC_MASK)
        buf.fds = tuple(request.fds)

    def _copy_timestamp(self, buf: Buffer, request: QueueRequest) -> None:
        """__copy_timestamp() at QBUF (also of a prepared buffer): an OUTPUT buffer takes the
        caller's timestamp, and its timecode with the TIMECODE flag."""
        if not self.is_output:
            return
        timecode = request.flags & uapi.V4L2_BUF_FLAG_TIMECODE
        buf.flags = buf.flags & ~uapi.V4L2_BUF_FLAG_TIMECODE | timecode
        buf.metadata = Metadata(request.metadata.timestamp, buf.flags & METADATA_FLAGS, buf.metadata.field,
                                request.metadata.timecode if timecode else bytes(16))

    def prepare(self, index: int, request: QueueRequest) -> Buffer:
        """PREPARE_BUF: checked now, queued later as it was checked."""
        buf = self.buffer(index)
        if buf.state is not BufState.DEQUEUED or buf.prepared:
            raise KernelError(errno.EINVAL, f"{self.name} buffer {index} is already "
                                            f"{'prepared' if buf.prepared else buf.state.value}")
        self._check(buf, request)
        self._keep(buf, request)
        buf.prepared = True
        buf.state = BufState.PREPARED
        return buf

    def queue(self, index: int, request: QueueRequest) -> Buffer:
        buf = self.buffer(index)
        if buf.state is BufState.PREPARED:
            self.check_planes(buf, request.planes)  # vb2 keeps what PREPARE_BUF checked
        elif buf.state is BufState.DEQUEUED:
            self._check(buf, request)
            self._keep(buf, request)
        else:
            raise KernelError(errno.EINVAL, f"{self.name} buffer {index} is already {buf.state.value}")
        self._copy_timestamp(buf, request)
        buf.prepared = False
        buf.state = BufState.QUEUED
        self._queued.append(buf)
        return buf

    def dequeue(self) -> Buffer:
        if not self.streaming:
            raise KernelError(errno.EINVAL, f"{self.name} is not streaming")
        if self.last_buffer_dequeued:
            raise KernelError(errno.EPIPE, "the last buffer was dequeued: STREAMOFF or a START command resumes")
        if not self._done:
            raise KernelError(errno.EAGAIN, f"no {self.name} buffer is ready")
        buf = self._done.popleft()
        buf.state = BufState.DEQUEUED
        if not self.is_output and buf.flags & uapi.V4L2_BUF_FLAG_LAST:
            self.last_buffer_dequeued = True
        return buf

    # -- the driver's side -------------------------------------------------------------------

    @property
    def owned_by_driver(self) -> bool:
        """vb2's queued_list is not empty: buffers queued, being processed or done."""
        return bool(self._queued or self._done)

    @property
    def has_done(self) -> bool:
        return bool(self._done)

    def peek(self) -> Optional[Buffer]:
        """The oldest buffer waiting for the driver, if any."""
        return self._queued[0] if self._queued else None

    def last_queued(self) -> Optional[Buffer]:
        return self._queued[-1] if self._queued else None

    def complete(self, bytesused: Sequence[int], flags: int = 0,
                 metadata: Optional[Metadata] = None) -> Buffer:
        """vb2_buffer_done() for the oldest queued buffer: it becomes ready for DQBUF. A CAPTURE
        buffer takes the ``metadata`` of the OUTPUT buffer it was made from."""
        buf = self._queued.popleft()
        buf.bytesused = tuple(bytesused)
        buf.data_offsets = (0,) * len(bytesused)
        if metadata is not None:
            buf.metadata = metadata
            buf.flags = flags | metadata.flags
        elif self.is_output:
            buf.flags |= flags
        else:
            buf.flags = flags
        buf.sequence = self.sequence
        self.sequence += 1
        buf.state = BufState.DONE
        self._done.append(buf)
        return buf

    # -- streaming ---------------------------------------------------------------------------

    def stream_on(self) -> bool:
        """True if this call started streaming (a second STREAMON is a no-op, as in vb2)."""
        if self.streaming:
            return False
        if not self.buffers:
            raise KernelError(errno.EINVAL, f"{self.name} has no buffers: REQBUFS before STREAMON")
        self.streaming = True
        return True

    def stream_off(self) -> None:
        """__vb2_queue_cancel(): every buffer returns to the application, the LAST mark clears."""
        for buf in self.buffers:
            buf.state = BufState.DEQUEUED
            buf.prepared = False
        self._queued.clear()
        self._done.clear()
        self.streaming = False
        self.last_buffer_dequeued = False
        self.sequence = 0
