"""One open() of a VPU video node: the instance's tree, its two vb2 queues, controls and drain.

``Instance`` holds what decoder and encoder share: the RFC's ``instance`` node with its
``output``/``capture`` children and the memory-usage control fed by the tracker's notifications;
vb2 buffer allocation (one unnamed, page-aligned add per MMAP plane); the firmware stream slot,
taken at the first STREAMON as ``vpu_inst_register()`` does (open never fails for want of one);
the frame clock that processes one OUTPUT buffer into one CAPTURE buffer every 1/fps seconds;
the mem2mem drain (STOP command, LAST flag, EPIPE, the EOS event) and ``v4l2_m2m_poll()``'s
answer. ``Decoder`` and ``Encoder`` add when the driver's internal buffers appear, what a
processed frame holds, and their formats, selections and controls.

Events (EOS, SOURCE_CHANGE, CTRL) go to ``emit``, which the open file points at its event queue.

Not thread-safe: the caller (``ioctls.VideoFile``) serialises the calls of one instance.
"""
from __future__ import annotations

import errno
import math
import select
from dataclasses import replace
from typing import Callable, ClassVar, Optional, Protocol, Sequence

from memtrackfs.errors import KernelError
from vpu_sim import uapi
from vpu_sim.driver.accounting import Held, LeafSet, Memory
from vpu_sim.driver.amphion import model as amphion
from vpu_sim.driver.amphion.controls import (
    Control,
    Controls,
    memory_usage_control,
    min_buffers_control,
)
from vpu_sim.driver.amphion.events import simple_event
from vpu_sim.driver.amphion.faults import NO_FAULTS, Faults
from vpu_sim.driver.amphion.formats import (
    CAPTURE,
    OUTPUT,
    FormatSpec,
    PixFormat,
    default_format,
    queue_formats,
    try_format,
)
from vpu_sim.driver.amphion.model import CoreKind
from vpu_sim.driver.amphion.queue import DST_QUEUE_OFF_BASE, Buffer, Queue, QueueRequest
from vpu_sim.driver.memtrack import Caller, Handle

Clock = Callable[[], float]
DEFAULT_FPS = 30.0
POLLIN_BITS = select.POLLIN | select.POLLRDNORM
POLLOUT_BITS = select.POLLOUT | select.POLLWRNORM


class Firmware(Protocol):
    """The cores' stream slots (``vpu_core.c``): one per instance that streams."""

    def register(self, instance: "Instance") -> None:
        """Take a slot on the least busy core of the instance's kind; EINVAL if none is free."""

    def unregister(self, instance: "Instance") -> None: ...


class NoFirmwareLimit:
    """Slots without a limit, for an instance used on its own (unit tests)."""

    def register(self, instance: "Instance") -> None:
        pass

    def unregister(self, instance: "Instance") -> None:
        pass


class Instance:
    kind: ClassVar[CoreKind]
    min_buffers: ClassVar[int]

    def __init__(self, memory: Memory, parent: Handle, caller: Caller, *, clock: Clock,
                 fps: float = DEFAULT_FPS, faults: Faults = NO_FAULTS,
                 firmware: Firmware = NoFirmwareLimit()) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, not {fps}")
        self.memory = memory
        self.caller = caller
        self.clock = clock
        self.frame_period = 1.0 / fps
        self.faults = faults
        self.firmware = firmware
        self.registered = False   # holds a firmware stream slot
        self.memory_usage = 0
        self.closed = False
        self.emit: Callable[[uapi.v4l2_event], None] = lambda event: None
        memtrack = memory.memtrack
        self.node = memtrack.create_node(parent, amphion.NODE_INSTANCE, caller)
        try:
            self.queues = {
                buf_type: Queue(buf_type, memtrack.create_node(self.node, name, caller),
                                default_format(self.kind, buf_type), self.min_buffers)
                for buf_type, name in ((OUTPUT, amphion.NODE_OUTPUT), (CAPTURE, amphion.NODE_CAPTURE))
            }
            memtrack.watch(self.node, amphion.NOTIFY_DELAY_MS, self.on_memory_usage)
        except BaseException:
            memtrack.destroy(self.node)
            raise
        self.controls = Controls([
            min_buffers_control(uapi.V4L2_CID_MIN_BUFFERS_FOR_CAPTURE, "Min Number of Capture Buffers",
                                lambda: self.queues[CAPTURE].min_buffers),
            min_buffers_control(uapi.V4L2_CID_MIN_BUFFERS_FOR_OUTPUT, "Min Number of Output Buffers",
                                lambda: self.queues[OUTPUT].min_buffers),
            memory_usage_control(lambda: self.memory_usage),
            *self._extra_controls(),
        ], on_change=lambda control, changes: self.emit(control_event(control, changes)))
        # Frame clock: when the next frame completes; "stalled" while an input is missing, so
        # the clock restarts from the moment processing becomes possible again.
        self._next_frame = 0.0
        self._stalled = True
        # v4l2-mem2mem drain state.
        self._draining = False
        self._stopped = False
        self._next_buf_last = False
        self._last_src: Optional[Buffer] = None
        self._pictures_left: Optional[int] = None  # of the OUTPUT buffer being decoded

    def leaf_set(self, name: str) -> LeafSet:
        return LeafSet(self.memory, self.node, name)

    def on_memory_usage(self, nbytes: int) -> None:
        """The tracker's notify callback (200 ms coalesced): the V4L2_CID_MEMORY_USAGE value.

        Runs on the tracker connection's thread, so it must not wait for a lock an ioctl holds
        while that ioctl waits for the tracker: it stores, and ``usage_changed`` (set by the open
        file) queues the control event without waiting.
        """
        changed = nbytes != self.memory_usage
        self.memory_usage = nbytes
        if changed:
            self.usage_changed()

    def usage_changed(self) -> None:
        """Where a change of the memory usage goes (the open file replaces it)."""

    # -- hooks for Decoder and Encoder -------------------------------------------------------

    def _extra_controls(self) -> Sequence[Control]:
        return ()

    def _format_set(self, queue: Queue) -> None:
        """S_FMT stored ``queue.fmt``; propagate it (the other queue's size follows)."""

    def _stream_started(self, queue: Queue, caller: Caller) -> None:
        """STREAMON turned ``queue`` on; allocate what the driver allocates then, or raise."""

    def _prepare_frame(self) -> bool:
        """Run firmware events due before the next frame; True if a frame can be processed."""
        raise NotImplementedError

    def _firmware_due(self) -> Optional[float]:
        """When a firmware event not tied to a frame is due (a header being parsed), if any."""
        return None

    def _frame_result(self, src: Buffer, dst: Buffer) -> tuple[tuple[int, ...], int]:
        """bytesused and flags of the CAPTURE buffer made from ``src``."""
        raise NotImplementedError

    def _pictures_in(self, buf: Buffer, read: Callable[[Buffer], bytes]) -> int:
        """How many CAPTURE buffers a queued OUTPUT buffer makes (one raw frame: one)."""
        return 1

    def _internal_leaves(self) -> Sequence[LeafSet]:
        """Every driver-internal buffer set, freed at close."""
        raise NotImplementedError

    # -- formats -----------------------------------------------------------------------------

    def queue(self, buf_type: int) -> Queue:
        queue_formats(self.kind, buf_type)  # EINVAL for a type the device does not have
        return self.queues[buf_type]

    def enum_format(self, buf_type: int, index: int) -> FormatSpec:
        formats = queue_formats(self.kind, buf_type).formats
        if not 0 <= index < len(formats):
            raise KernelError(errno.EINVAL, f"format index {index} is past the last ({len(formats) - 1})")
        return formats[index]

    def get_format(self, buf_type: int) -> PixFormat:
        fmt = self.queue(buf_type).fmt
        if buf_type == CAPTURE:
            # The stream's colorimetry, as the OUTPUT format says it (both queues report it).
            source = self.queues[OUTPUT].fmt
            fmt = replace(fmt, colorspace=source.colorspace, ycbcr_enc=source.ycbcr_enc,
                          quantization=source.quantization, xfer_func=source.xfer_func)
        return fmt

    def try_format(self, buf_type: int, fmt: PixFormat) -> PixFormat:
        return try_format(self.kind, buf_type, fmt)

    def set_format(self, buf_type: int, fmt: PixFormat) -> PixFormat:
        queue = self.queue(buf_type)
        adjusted = self.try_format(buf_type, fmt)
        if queue.buffers:
            raise KernelError(errno.EBUSY, f"{queue.name} has buffers: REQBUFS(0) before changing its format")
        queue.fmt = adjusted
        self._format_set(queue)
        return self.get_format(buf_type)

    def regions(self) -> list[tuple[int, int]]:
        """Every MMAP plane's (mmap offset, page-aligned length): what the caller may map."""
        found = []
        for queue in self.queues.values():
            base = DST_QUEUE_OFF_BASE if queue.buf_type == CAPTURE else 0
            for buf in queue.buffers:
                if buf.memory == uapi.V4L2_MEMORY_MMAP:
                    found += [(base + offset, amphion.page_align(length))
                              for offset, length in zip(buf.offsets, buf.lengths)]
        return found

    def selection(self, buf_type: int, target: int) -> tuple[int, int, int, int]:
        """G_SELECTION (single-planar ``buf_type``, as the core passes it): (left, top, w, h)."""
        raise KernelError(errno.EINVAL, "no selection on this device")

    def set_selection(self, buf_type: int, target: int, rect: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        raise KernelError(errno.EINVAL, "no selection on this device")

    # -- buffers -----------------------------------------------------------------------------

    def _free_buffers(self, queue: Queue) -> None:
        for buf in queue.remove_all():
            self.memory.free(buf.tracked)

    def _allocate_buffers(self, queue: Queue, count: int, memory: int, sizes: Sequence[int],
                          caller: Caller) -> int:
        """Add up to ``count`` buffers; stop at the first ENOMEM, as __vb2_queue_alloc() does."""
        for made in range(count):
            tracked: tuple[Held, ...] = ()
            if memory == uapi.V4L2_MEMORY_MMAP:
                try:
                    tracked = self.memory.alloc_planes(queue.node, [amphion.page_align(s) for s in sizes], caller)
                except OSError as exc:
                    if exc.errno != errno.ENOMEM:
                        raise
                    return made
            offsets = []
            offset = queue.next_offset()
            for size in sizes:
                offsets.append(offset)
                offset = amphion.page_align(offset + size)
            queue.buffers.append(Buffer(len(queue.buffers), memory, tuple(sizes), tracked, tuple(offsets)))
        return count

    def request_buffers(self, buf_type: int, count: int, memory: int, caller: Caller) -> int:
        """REQBUFS: free the queue's buffers, then allocate at least the queue's minimum."""
        queue = self.queue(buf_type)
        queue.check_memory(memory)
        if queue.streaming:
            raise KernelError(errno.EBUSY, f"{queue.name} is streaming: STREAMOFF before REQBUFS")
        self._free_buffers(queue)
        if count == 0:
            return 0
        # The driver's queue_setup raises the count to its minimum; vb2 caps it at VIDEO_MAX_FRAME.
        count = min(max(count, queue.min_buffers), uapi.VIDEO_MAX_FRAME)
        made = self._allocate_buffers(queue, count, memory, queue.fmt.sizes, caller)
        if made < queue.min_buffers:
            self._free_buffers(queue)
            raise KernelError(errno.ENOMEM, f"{queue.name}: only {made} of {count} buffers could be allocated "
                                            f"(the driver needs {queue.min_buffers})")
        queue.memory = memory
        return made

    def create_buffers(self, buf_type: int, count: int, memory: int, fmt: PixFormat,
                       caller: Caller) -> tuple[int, int]:
        """CREATE_BUFS: add buffers sized by ``fmt``; returns (first index, count made)."""
        queue = self.queue(buf_type)
        queue.check_memory(memory)
        if queue.memory and memory != queue.memory:
            raise KernelError(errno.EINVAL, f"{queue.name} buffers use memory type {queue.memory}, not {memory}")
        first = len(queue.buffers)
        if count == 0:
            return first, 0
        if first == uapi.VIDEO_MAX_FRAME:
            raise KernelError(errno.ENOBUFS, f"{queue.name} already has {uapi.VIDEO_MAX_FRAME} buffers")
        wanted = queue.fmt.sizes
        if len(fmt.planes) != len(wanted) or any(got < need for got, need in zip(fmt.sizes, wanted)):
            raise KernelError(errno.EINVAL, f"{queue.name} needs {len(wanted)} planes of at least {list(wanted)} "
                                            f"bytes, not {list(fmt.sizes)}")
        made = self._allocate_buffers(queue, min(count, uapi.VIDEO_MAX_FRAME - first), memory, fmt.sizes, caller)
        if made == 0:
            raise KernelError(errno.ENOMEM, f"{queue.name}: no buffer could be allocated")
        queue.memory = memory
        return first, made

    def query_buffer(self, buf_type: int, index: int, planes: int) -> Buffer:
        self.advance()
        queue = self.queue(buf_type)
        buf = queue.buffer(index)
        queue.check_planes(buf, planes)
        return buf

    def prepare_buffer(self, buf_type: int, index: int, request: QueueRequest) -> Buffer:
        return self.queue(buf_type).prepare(index, request)

    def queue_buffer(self, buf_type: int, index: int, request: QueueRequest,
                     read: Callable[[Buffer], bytes] = lambda buf: b"") -> Buffer:
        """QBUF; ``read(buf)`` fetches an OUTPUT buffer's bytes if the instance must look at them."""
        queue = self.queue(buf_type)
        buf = queue.queue(index, request)
        if queue.is_output:
            buf.pictures = self._pictures_in(buf, read)
        if not queue.is_output and self._next_buf_last and queue.streaming:
            self._deliver_last()
        self.advance()
        return buf

    def dequeue_buffer(self, buf_type: int, planes: int) -> Buffer:
        """DQBUF; EAGAIN when nothing is ready yet (``next_event_time`` says when it will be)."""
        self.advance()
        queue = self.queue(buf_type)
        if queue.streaming and queue.buffers:
            queue.check_planes(queue.buffers[0], planes)
        return queue.dequeue()

    # -- streaming ---------------------------------------------------------------------------

    def stream_on(self, buf_type: int, caller: Caller) -> None:
        queue = self.queue(buf_type)
        if not queue.stream_on():
            return
        try:
            if not self.registered:
                self.firmware.register(self)  # vpu_inst_register(): EINVAL when every slot is taken
                self.registered = True
            self._stream_started(queue, caller)
        except BaseException:
            queue.stream_off()  # start_streaming failed: vb2 hands the buffers back
            raise
        if not queue.is_output:
            queue.last_buffer_dequeued = False  # vb2_clear_last_buffer_dequeued()
        self.advance()

    def stream_off(self, buf_type: int) -> None:
        """STREAMOFF keeps the driver's internal buffers; only the queue is cancelled."""
        queue = self.queue(buf_type)
        if queue.is_output:
            self._last_src = None
            self._pictures_left = None
            if self._draining:
                self._deliver_last()  # v4l2_m2m_update_stop_streaming_state()
        else:
            self._draining = self._stopped = self._next_buf_last = False
            self._last_src = None
        queue.stream_off()
        self.advance()

    # -- drain: DECODER_CMD / ENCODER_CMD ------------------------------------------------------

    def command(self, cmd: int, *, try_only: bool) -> None:
        """START or STOP, as v4l2_m2m's stateful decoder/encoder command helpers do.

        STOP drains: the CAPTURE buffer made from the last OUTPUT buffer queued carries
        V4L2_BUF_FLAG_LAST, or, with nothing left to process, the next CAPTURE buffer comes back
        empty with it. The EOS event is queued at the moment that buffer is done, so a client
        that sees the event has the buffer too (the deviation from Linux 6.1's Amphion driver,
        which v4l2-compliance 1.22.1 and FFmpeg need: README).
        """
        if cmd not in (uapi.V4L2_DEC_CMD_START, uapi.V4L2_DEC_CMD_STOP):
            raise KernelError(errno.EINVAL, f"command {cmd} is not supported (START {uapi.V4L2_DEC_CMD_START}, "
                                            f"STOP {uapi.V4L2_DEC_CMD_STOP})")
        if try_only:
            return
        if self._draining:
            raise KernelError(errno.EBUSY, "a drain is in progress")
        if cmd == uapi.V4L2_DEC_CMD_START:
            self._stopped = False
            self.queues[CAPTURE].last_buffer_dequeued = False
        elif not self._stopped:
            self._draining = True
            self._last_src = self.queues[OUTPUT].last_queued()
            if self._last_src is None:
                self._deliver_last()
        self.advance()

    def _deliver_last(self) -> None:
        """Return the next CAPTURE buffer empty with V4L2_BUF_FLAG_LAST, or mark the next one queued."""
        capture = self.queues[CAPTURE]
        dst = capture.peek()
        if dst is None or not capture.streaming:
            self._next_buf_last = True
            return
        capture.complete([0] * len(dst.lengths), uapi.V4L2_BUF_FLAG_LAST)
        self._next_buf_last = False
        if self._draining:
            self._draining, self._stopped = False, True
            self.emit(simple_event(uapi.V4L2_EVENT_EOS))

    # -- the frame clock ---------------------------------------------------------------------

    def _ready(self) -> bool:
        output, capture = self.queues[OUTPUT], self.queues[CAPTURE]
        return (not self._stopped and output.streaming and capture.streaming
                and output.peek() is not None and capture.peek() is not None)

    def advance(self) -> None:
        """Process every frame due by now: each picture of the oldest OUTPUT buffer into one
        CAPTURE buffer per period; the OUTPUT buffer is done with its last picture."""
        now = self.clock()
        output, capture = self.queues[OUTPUT], self.queues[CAPTURE]
        while True:
            if not (self._prepare_frame() and self._ready()):
                self._stalled = True
                return
            src, dst = output.peek(), capture.peek()
            assert src is not None and dst is not None
            if self._pictures_left is None:
                self._pictures_left = src.pictures
            if self._pictures_left == 0:
                self._consumed(src)  # nothing to show in it (parameter sets only): no time taken
                continue
            if self._stalled:
                self._next_frame = max(self._next_frame, now)
                self._stalled = False
            self._next_frame = self.faults.completion(self._next_frame)  # a stuck firmware holds it
            if self._next_frame > now:
                return
            bytesused, flags = self._frame_result(src, dst)
            self._pictures_left -= 1
            last = self._pictures_left == 0 and src is self._last_src
            capture.complete(bytesused, flags | (uapi.V4L2_BUF_FLAG_LAST if last else 0), src.metadata)
            if self._pictures_left == 0:
                self._consumed(src)
            self._next_frame += self.faults.frame_period(self.frame_period, self._next_frame)

    def _consumed(self, src: Buffer) -> None:
        """The OUTPUT buffer ``src`` was read to its end: it is done; if it was the last one
        before STOP, the drain ends (with an empty LAST buffer if its last picture did not carry
        the flag)."""
        self.queues[OUTPUT].complete(src.bytesused)
        self._pictures_left = None
        if src is self._last_src:
            self._last_src = None
            if src.pictures == 0:
                self._deliver_last()
            else:
                self._draining, self._stopped = False, True
                self.emit(simple_event(uapi.V4L2_EVENT_EOS))

    def poll_mask(self) -> int:
        """v4l2_m2m_poll_for_data() with both directions asked (FUSE does not say which were)."""
        self.advance()
        output, capture = self.queues[OUTPUT], self.queues[CAPTURE]
        if ((not output.streaming or not output.owned_by_driver)
                and (not capture.streaming or (not capture.owned_by_driver and not capture.last_buffer_dequeued))):
            return select.POLLERR
        mask = POLLOUT_BITS if output.has_done else 0
        if capture.has_done or capture.last_buffer_dequeued:
            mask |= POLLIN_BITS
        return mask

    def next_event_time(self) -> Optional[float]:
        """When the next frame completes or firmware event happens, or None if processing waits
        for the application."""
        due = self._firmware_due()
        if due is not None:
            return due
        if self._stalled or math.isinf(self._next_frame):
            return None  # also a firmware stuck for good: only a QBUF, STREAMOFF or close wakes DQBUF
        return self._next_frame

    # -- close -------------------------------------------------------------------------------

    def close(self) -> None:
        """release(): free every buffer, then remove the instance node (no leak report).

        With the ``driver-leak`` fault, the named internal buffers are forgotten, and the node
        that still holds them stays in the tree (see ``vpu_sim.driver.amphion.faults``).
        """
        if self.closed:
            return
        self.closed = True
        if self.registered:
            self.firmware.unregister(self)
            self.registered = False
        memtrack = self.memory.memtrack
        for queue in self.queues.values():
            queue.stream_off()
            self._free_buffers(queue)
        forgotten = False
        for leaves in self._internal_leaves():
            if self.faults.leaks(leaves.name) and leaves.held:
                forgotten = True
            else:
                leaves.free_all()
        memtrack.unwatch(self.node)
        if not forgotten:
            memtrack.destroy(self.node)


def control_event(control: Control, changes: int) -> uapi.v4l2_event:
    """fill_event() of v4l2-ctrls-core.c: a V4L2_EVENT_CTRL describing ``control`` now."""
    event = uapi.v4l2_event(type=uapi.V4L2_EVENT_CTRL, id=control.id)
    ctrl = event.u.ctrl
    ctrl.changes = changes
    ctrl.type = control.type
    ctrl.flags = control.flags
    ctrl.value64 = 0 if control.flags & uapi.V4L2_CTRL_FLAG_WRITE_ONLY else control.current
    # The event's range fields are 32-bit: a 64-bit control's range is cut as the kernel cuts it.
    ctrl.minimum, ctrl.maximum = _s32(control.minimum), _s32(control.maximum)
    ctrl.step, ctrl.default_value = _s32(control.reported_step), _s32(control.default)
    return event


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value
