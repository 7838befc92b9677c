"""The decoder instance (Malone): bitstream ring and udata at STREAMON, MBI/DCP after the header.

The simulated bitstream carries its sequence header in the first OUTPUT buffer: once that buffer
is queued on a streaming OUTPUT queue the "firmware" reports the stream (the OUTPUT format's
size, 8-bit, unless ``change_resolution`` says otherwise), the CAPTURE format becomes the
stream's, MIN_BUFFERS_FOR_CAPTURE becomes num_ref + num_dpb, and the firmware asks for its MBI
and DCP buffers. Requests the memory cannot satisfy stay pending and stall decoding, as a real
firmware waits for its frame-store response.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

from vpu_sim import uapi
from vpu_sim.driver import amphion
from vpu_sim.driver.accounting import LeafSet, Memory
from vpu_sim.driver.amphion import CoreKind, SequenceHeader
from vpu_sim.driver.faults import NO_FAULTS, Faults
from vpu_sim.driver.formats import CAPTURE, OUTPUT, PixFormat
from vpu_sim.driver.instance import DEFAULT_FPS, Clock, Instance
from vpu_sim.driver.memtrack import Caller, Handle
from vpu_sim.driver.queue import Buffer, Queue


class Decoder(Instance):
    kind = CoreKind.DECODER
    min_buffers = amphion.DEC_MIN_BUFFERS

    def __init__(self, memory: Memory, parent: Handle, caller: Caller, *, clock: Clock,
                 fps: float = DEFAULT_FPS, faults: Faults = NO_FAULTS) -> None:
        super().__init__(memory, parent, caller, clock=clock, fps=fps, faults=faults)
        self.ring = self.leaf_set(amphion.LEAF_RING)
        self.udata = self.leaf_set(amphion.LEAF_UDATA)
        self.mbi = self.leaf_set(amphion.LEAF_MBI)
        self.dcp = self.leaf_set(amphion.LEAF_DCP)
        self.header: Optional[SequenceHeader] = None
        self._pending_header: Optional[SequenceHeader] = None
        # After a resolution change decoding waits until CAPTURE is restarted with new buffers.
        self._source_change = False

    def change_resolution(self, width: int, height: int, depth: int = 8) -> None:
        """Make the stream's next sequence header announce a new size (a dynamic resolution change)."""
        self._pending_header = amphion.sequence_header(self.queues[OUTPUT].fmt.pixelformat, width, height, depth)
        self.advance()

    def _internal_leaves(self) -> Sequence[LeafSet]:
        return self.mbi, self.dcp, self.ring, self.udata

    # -- formats -----------------------------------------------------------------------------

    def _capture_format(self, header: SequenceHeader, base: PixFormat) -> PixFormat:
        fourcc = uapi.V4L2_PIX_FMT_NV12M_10BE_8L128 if header.depth > 8 else uapi.V4L2_PIX_FMT_NV12M_8L128
        return super().try_format(CAPTURE, replace(base, width=header.width, height=header.height,
                                                   pixelformat=fourcc))

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

    def _prepare_frame(self) -> bool:
        output = self.queues[OUTPUT]
        if self.header is None:
            if not (output.streaming and output.peek() is not None):
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
        """A resolution storm (``vpu_sim.driver.faults``): the stream's next header announces its size.

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
