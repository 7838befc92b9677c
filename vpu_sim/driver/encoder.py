"""The encoder instance (Windsor): the ring when both queues stream, then enc-frame/ref-frame.

The CAPTURE (H.264) size always follows the OUTPUT (NV12M) size. The ring's size comes from
the H.264 CPB size control when the session starts; a restart with another CPB size or frame
size reallocates, a plain STREAMOFF/STREAMON keeps the buffers.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from vpu_sim import uapi
from vpu_sim.driver import amphion
from vpu_sim.driver.accounting import LeafSet, Memory
from vpu_sim.driver.amphion import CoreKind
from vpu_sim.driver.controls import Control
from vpu_sim.driver.faults import NO_FAULTS, Faults
from vpu_sim.driver.formats import CAPTURE, OUTPUT, PixFormat
from vpu_sim.driver.instance import DEFAULT_FPS, Clock, Instance
from vpu_sim.driver.memtrack import Caller, Handle
from vpu_sim.driver.queue import Buffer, Queue

# A simulated compressed frame: 1/50 of the raw NV12 frame, roughly 4 Mbit/s at 1080p30.
COMPRESSION_RATIO = 50


class Encoder(Instance):
    kind = CoreKind.ENCODER
    min_buffers = amphion.ENC_MIN_BUFFERS

    def __init__(self, memory: Memory, parent: Handle, caller: Caller, *, clock: Clock,
                 fps: float = DEFAULT_FPS, faults: Faults = NO_FAULTS) -> None:
        super().__init__(memory, parent, caller, clock=clock, fps=fps, faults=faults)
        self.ring = self.leaf_set(amphion.LEAF_RING)
        self.enc_frames = self.leaf_set(amphion.LEAF_ENC_FRAME)
        self.ref_frames = self.leaf_set(amphion.LEAF_REF_FRAME)

    def _extra_controls(self) -> Sequence[Control]:
        return (Control(uapi.V4L2_CID_MPEG_VIDEO_H264_CPB_SIZE, "H264 CPB Buffer Size", uapi.V4L2_CTRL_TYPE_INTEGER,
                        amphion.CPB_MIN_KIB, amphion.CPB_MAX_KIB, 1, amphion.CPB_DEFAULT_KIB),)

    def _internal_leaves(self) -> Sequence[LeafSet]:
        return self.enc_frames, self.ref_frames, self.ring

    def try_format(self, buf_type: int, fmt: PixFormat) -> PixFormat:
        if buf_type == CAPTURE:
            source = self.queues[OUTPUT].fmt
            fmt = replace(fmt, width=source.width, height=source.height)
        return super().try_format(buf_type, fmt)

    def _format_set(self, queue: Queue) -> None:
        capture = self.queues[CAPTURE]
        if queue.is_output and not capture.buffers:
            capture.fmt = self.try_format(CAPTURE, replace(capture.fmt, planes=()))

    def _stream_started(self, queue: Queue, caller: Caller) -> None:
        if all(q.streaming for q in self.queues.values()):
            cpb_kib = self.controls.find(uapi.V4L2_CID_MPEG_VIDEO_H264_CPB_SIZE).current
            self.ring.ensure(1, amphion.encoder_ring_size(cpb_kib), caller)

    def _prepare_frame(self) -> bool:
        if not self.ring.held:
            return False  # the session has not started: the firmware has asked for nothing yet
        source = self.queues[OUTPUT].fmt
        size = amphion.encoder_frame_size(source.width, source.height)
        return (self.enc_frames.ensure(amphion.ENC_SRC_FRAMES, size, self.caller, partial=True)
                and self.ref_frames.ensure(amphion.ENC_REF_FRAMES, size, self.caller, partial=True))

    def _frame_result(self, src: Buffer, dst: Buffer) -> tuple[tuple[int, ...], int]:
        source = self.queues[OUTPUT].fmt
        size = max(1, min(dst.lengths[0], sum(amphion.encoder_nv12m_plane_sizes(source.width, source.height))
                          // COMPRESSION_RATIO))
        flags = uapi.V4L2_BUF_FLAG_KEYFRAME if self.queues[CAPTURE].sequence == 0 else uapi.V4L2_BUF_FLAG_PFRAME
        return (size,), flags
