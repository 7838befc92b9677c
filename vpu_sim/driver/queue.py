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
from vpu_sim.driver import amphion
from vpu_sim.driver.accounting import Held
from vpu_sim.driver.formats import PixFormat
from vpu_sim.driver.memtrack import Handle

# v4l2-mem2mem adds this to CAPTURE offsets so one mmap() offset space serves both queues.
DST_QUEUE_OFF_BASE = 1 << 30


class BufState(Enum):
    DEQUEUED = "dequeued"   # owned by the application
    QUEUED = "queued"       # owned by the driver, waiting to be processed
    DONE = "done"           # processed, waiting for DQBUF


@dataclass
class Buffer:
    index: int
    memory: int
    lengths: tuple[int, ...]       # plane sizes as vb2 reports them
    tracked: tuple[Held, ...]      # page-aligned planes added to the queue node (MMAP only)
    offsets: tuple[int, ...]       # mmap offsets of the planes
    state: BufState = BufState.DEQUEUED
    bytesused: tuple[int, ...] = ()
    fds: tuple[int, ...] = ()      # DMABUF: the fds of the last QBUF, echoed back as vb2 does
    flags: int = 0                 # KEYFRAME, PFRAME, LAST, ...: set when the buffer completes
    timestamp: tuple[int, int] = (0, 0)
    sequence: int = 0

    @property
    def state_flags(self) -> int:
        return {BufState.DEQUEUED: 0, BufState.QUEUED: uapi.V4L2_BUF_FLAG_QUEUED,
                BufState.DONE: uapi.V4L2_BUF_FLAG_DONE}[self.state]


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

    def queue(self, index: int, memory: int, bytesused: Sequence[int], fds: Sequence[int],
              timestamp: tuple[int, int], planes: int) -> Buffer:
        buf = self.buffer(index)
        if memory != self.memory:
            raise KernelError(errno.EINVAL, f"{self.name} buffers use memory type {self.memory}, not {memory}")
        self.check_planes(buf, planes)
        if buf.state is not BufState.DEQUEUED:
            raise KernelError(errno.EINVAL, f"{self.name} buffer {index} is already {buf.state.value}")
        if self.is_output:
            for plane, (used, length) in enumerate(zip(bytesused, buf.lengths)):
                if used > length:
                    raise KernelError(errno.EINVAL, f"plane {plane}: bytesused {used} exceeds its length {length}")
            # vb2 treats 0 as "the whole plane" (deprecated, but clients rely on it).
            buf.bytesused = tuple(used or length for used, length in zip(bytesused, buf.lengths))
            buf.timestamp = timestamp
        buf.fds = tuple(fds)
        buf.flags = 0
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

    def peek(self) -> Optional[Buffer]:
        """The oldest buffer waiting for the driver, if any."""
        return self._queued[0] if self._queued else None

    def last_queued(self) -> Optional[Buffer]:
        return self._queued[-1] if self._queued else None

    def complete(self, bytesused: Sequence[int], flags: int = 0,
                 timestamp: Optional[tuple[int, int]] = None) -> Buffer:
        """vb2_buffer_done() for the oldest queued buffer: it becomes ready for DQBUF."""
        buf = self._queued.popleft()
        buf.bytesused = tuple(bytesused)
        buf.flags = flags
        if timestamp is not None:
            buf.timestamp = timestamp
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
        self._queued.clear()
        self._done.clear()
        self.streaming = False
        self.last_buffer_dequeued = False
        self.sequence = 0
