"""The decoder instance (Malone): bitstream ring and udata at STREAMON, MBI/DCP after the header.

The simulated bitstream carries its sequence header in the first OUTPUT buffer (its bytes are
never parsed: any data, zeros too, will do): once that buffer is queued on a streaming OUTPUT
queue the "firmware" reports the stream (the OUTPUT format's size, 8-bit, unless
``change_resolution`` says otherwise), the CAPTURE format becomes the decoded frame (whole
macroblocks) with the stream's size as its compose rectangle, MIN_BUFFERS_FOR_CAPTURE becomes
num_ref + num_dpb, ENUM_FMT(CAPTURE) offers only that format, V4L2_EVENT_SOURCE_CHANGE is
queued (vdec_event_seq_hdr()), and the firmware asks for its MBI and DCP buffers. Requests the
memory cannot satisfy stay pending and stall decoding, as a real firmware waits for its
frame-store response.
"""
from __future__ import annotations

import errno
from dataclasses import replace
from typing import Callable, Optional, Sequence

from memtrackfs.errors import KernelError
from vpu_sim import uapi
from vpu_sim.driver.accounting import LeafSet, Memory
from vpu_sim.driver.amphion import model as amphion
from vpu_sim.driver.amphion.bitstream import pictures_starting
from vpu_sim.driver.amphion.controls import Control
from vpu_sim.driver.amphion.events import simple_event
from vpu_sim.driver.amphion.faults import NO_FAULTS, Faults
from vpu_sim.driver.amphion.formats import (
    CAPTURE,
    OUTPUT,
    FormatSpec,
    PixFormat,
    queue_formats,
)
from vpu_sim.driver.amphion.instance import (
    DEFAULT_FPS,
    Clock,
    Firmware,
    Instance,
    NoFirmwareLimit,
)
from vpu_sim.driver.amphion.model import CoreKind, SequenceHeader
from vpu_sim.driver.amphion.queue import Buffer, Queue
from vpu_sim.driver.memtrack import Caller, Handle


class Decoder(Instance):
    kind = CoreKind.DECODER
    min_buffers = amphion.DEC_MIN_BUFFERS

    def __init__(self, memory: Memory, parent: Handle, caller: Caller, *, clock: Clock,
                 fps: float = DEFAULT_FPS, faults: Faults = NO_FAULTS,
                 firmware: Firmware = NoFirmwareLimit()) -> None:
        super().__init__(memory, parent, caller, clock=clock, fps=fps, faults=faults, firmware=firmware)
        self.ring = self.leaf_set(amphion.LEAF_RING)
        self.udata = self.leaf_set(amphion.LEAF_UDATA)
        self.mbi = self.leaf_set(amphion.LEAF_MBI)
        self.dcp = self.leaf_set(amphion.LEAF_DCP)
        self.header: Optional[SequenceHeader] = None
        self._pending_header: Optional[SequenceHeader] = None
        self._header_due: Optional[float] = None  # when the firmware reports the first header
        # After a resolution change decoding waits until CAPTURE is restarted with new buffers.
        self._source_change = False

    def change_resolution(self, width: int, height: int, depth: int = 8) -> None:
        """Make the stream's next sequence header announce a new size (a dynamic resolution change)."""
        self._pending_header = amphion.sequence_header(self.queues[OUTPUT].fmt.pixelformat, width, height, depth)
        self.advance()

    def _internal_leaves(self) -> Sequence[LeafSet]:
        return self.mbi, self.dcp, self.ring, self.udata

    def _extra_controls(self) -> Sequence[Control]:
        """vdec_ctrl_init(): the display delay pair, which the firmware ignores here."""
        return (Control(uapi.V4L2_CID_MPEG_VIDEO_DEC_DISPLAY_DELAY, "Display Delay", uapi.V4L2_CTRL_TYPE_INTEGER,
                        0, 0, 1, 0),
                Control(uapi.V4L2_CID_MPEG_VIDEO_DEC_DISPLAY_DELAY_ENABLE, "Display Delay Enable",
                        uapi.V4L2_CTRL_TYPE_BOOLEAN, 0, 1, 1, 0))

    # -- formats -----------------------------------------------------------------------------

    def _capture_format(self, header: SequenceHeader, base: PixFormat) -> PixFormat:
        fourcc = uapi.V4L2_PIX_FMT_NV12M_10BE_8L128 if header.depth > 8 else uapi.V4L2_PIX_FMT_NV12M_8L128
        width, height = header.decoded_size
        return super().try_format(CAPTURE, replace(base, width=width, height=height, pixelformat=fourcc))

    def enum_format(self, buf_type: int, index: int) -> FormatSpec:
        """Once the stream is known, CAPTURE offers only its format (vdec_enum_fmt())."""
        if buf_type == CAPTURE and self.header is not None:
            spec = queue_formats(self.kind, CAPTURE).find(self.queues[CAPTURE].fmt.pixelformat)
            if index == 0 and spec is not None:
                return spec
            raise KernelError(errno.EINVAL, f"the stream's format is the only CAPTURE format (index {index})")
        return super().enum_format(buf_type, index)

    def selection(self, buf_type: int, target: int) -> tuple[int, int, int, int]:
        """vdec_g_selection(): CAPTURE composing only; the visible rectangle of the decoded frame."""
        if buf_type != uapi.V4L2_BUF_TYPE_VIDEO_CAPTURE:
            raise KernelError(errno.EINVAL, "the decoder has selections on CAPTURE only")
        fmt = self.queues[CAPTURE].fmt
        if target == uapi.V4L2_SEL_TGT_COMPOSE_BOUNDS:
            return 0, 0, fmt.width, fmt.height
        if target in (uapi.V4L2_SEL_TGT_COMPOSE, uapi.V4L2_SEL_TGT_COMPOSE_DEFAULT, uapi.V4L2_SEL_TGT_COMPOSE_PADDED):
            if self.header is None:
                return 0, 0, fmt.width, fmt.height
            return 0, 0, self.header.width, self.header.height
        raise KernelError(errno.EINVAL, f"selection target {target:#x} is not the decoder's")

    def try_format(self, buf_type: int, fmt: PixFormat) -> PixFormat:
        if buf_type == CAPTURE and self.header is not None:
            return self._capture_format(self.header, fmt)  # the stream decides, not the caller
        return super().try_format(buf_type, fmt)

    def _format_set(self, queue: Queue) -> None:
        capture = self.queues[CAPTURE]
        if queue.is_output and self.header is None and not capture.buffers:
            # Until the header is parsed, the coded size the application gave is the best guess.
            capture.fmt = super().try_format(CAPTURE, replace(capture.fmt, width=queue.fmt.width,
                                                              height=queue.fmt.height, planes=()))

    # -- lifecycle ---------------------------------------------------------------------------

    def _stream_started(self, queue: Queue, caller: Caller) -> None:
        if queue.is_output and not self.ring.held:
            self.ring.ensure(1, amphion.DEC_RING_BYTES, caller)
            try:
                self.udata.ensure(1, amphion.DEC_UDATA_BYTES, caller)
            except BaseException:
                self.ring.free_all()
                raise
        elif not queue.is_output:
            self._source_change = False

    def _apply_header(self, header: SequenceHeader) -> None:
        capture = self.queues[CAPTURE]
        capture.fmt = self._capture_format(header, replace(capture.fmt, planes=()))
        capture.min_buffers = header.min_capture_buffers
        self.header = header
        self.emit(simple_event(uapi.V4L2_EVENT_SOURCE_CHANGE, changes=uapi.V4L2_EVENT_SRC_CH_RESOLUTION))

    def _pictures_in(self, buf: Buffer, read: Callable[[Buffer], bytes]) -> int:
        """The pictures that start in the buffer's bitstream; a buffer that holds no stream this
        model reads (another codec, zeros) counts as one picture."""
        count = pictures_starting(self.queues[OUTPUT].fmt.pixelformat, read(buf))
        return 1 if count is None else count

    def _firmware_due(self) -> Optional[float]:
        return self._header_due if self.header is None else None

    def _prepare_frame(self) -> bool:
        output = self.queues[OUTPUT]
        if self.header is None:
            if not (output.streaming and output.peek() is not None):
                return False
            # The firmware parses the first input for a frame period before it reports the
            # stream, so a client reads the format it set until SOURCE_CHANGE says otherwise.
            now = self.clock()
            if self._header_due is None:
                self._header_due = now + self.frame_period
            if now < self._header_due:
                return False
            fmt = output.fmt
            self._apply_header(self._pending_header
                               or amphion.sequence_header(fmt.pixelformat, fmt.width, fmt.height))
            self._pending_header = None
        else:
            self._follow_storm()
        if self._pending_header is not None:
            self._apply_header(self._pending_header)
            self._pending_header = None
            self.mbi.free_all()
            self.dcp.free_all()
            self._source_change = True
            self._deliver_last()
        header = self.header
        # The firmware asks for the new MBI/DCP at once; frames wait for CAPTURE's restart.
        return (self.mbi.ensure(header.mbi_count, header.mbi_bytes, self.caller, partial=True)
                and self.dcp.ensure(header.dcp_count, header.dcp_bytes, self.caller, partial=True)
                and not self._source_change)

    def _follow_storm(self) -> None:
        """A resolution storm (``vpu_sim.driver.amphion.faults``): the stream's next header announces its size.

        Not while a change is pending or CAPTURE is still being restarted for the last one:
        the stream's headers follow each other, one change at a time.
        """
        header = self.header
        size = self.faults.stream_size(self.clock())
        if (header is not None and size is not None and size != (header.width, header.height)
                and self._pending_header is None and not self._source_change):
            self._pending_header = amphion.sequence_header(header.codec, *size, header.depth)

    def _frame_result(self, src: Buffer, dst: Buffer) -> tuple[tuple[int, ...], int]:
        assert self.header is not None
        return tuple(min(size, length) for size, length in zip(self.header.capture_planes, dst.lengths)), 0
