"""The encoder instance (Windsor): the ring when both queues stream, then enc-frame/ref-frame.

The CAPTURE (H.264) size always follows the OUTPUT (NV12M) size. The ring's size comes from
the H.264 CPB size control when the session starts; a restart with another CPB size or frame
size reallocates, a plain STREAMOFF/STREAMON keeps the buffers. Its controls, crop rectangle,
frame sizes and frame rate are venc_ctrl_init(), venc_g/s_selection(), venc_enum_framesizes()
and venc_g/s_parm() of Linux 6.1, except that it enumerates no frame intervals (README: a
stateful encoder doing so fails v4l2-compliance 1.22.1's G_PARM test).
"""
from __future__ import annotations

import errno
import math
from dataclasses import replace
from typing import Sequence

from memtrackfs.errors import KernelError
from vpu_sim import uapi
from vpu_sim.driver.accounting import LeafSet, Memory
from vpu_sim.driver.amphion import model as amphion
from vpu_sim.driver.amphion.controls import Control
from vpu_sim.driver.amphion.faults import NO_FAULTS, Faults
from vpu_sim.driver.amphion.formats import CAPTURE, FORMATS, OUTPUT, PixFormat
from vpu_sim.driver.amphion.instance import (
    DEFAULT_FPS,
    Clock,
    Firmware,
    Instance,
    NoFirmwareLimit,
)
from vpu_sim.driver.amphion.model import CoreKind
from vpu_sim.driver.amphion.queue import Buffer, Queue
from vpu_sim.driver.memtrack import Caller, Handle

# A simulated compressed frame: 1/50 of the raw NV12 frame, roughly 4 Mbit/s at 1080p30.
COMPRESSION_RATIO = 50

H264_PROFILES = ("Baseline", "Constrained Baseline", "Main", "Extended", "High")
H264_LEVELS = ("1", "1b", "1.1", "1.2", "1.3", "2", "2.1", "2.2", "3", "3.1", "3.2", "4", "4.1", "4.2", "5", "5.1")
BITRATE_MODES = ("Variable Bitrate", "Constant Bitrate")
HEADER_MODES = ("Separate Buffer", "Joined With 1st Frame")
VUI_SAR_IDCS = ("Unspecified", "1:1", "12:11", "10:11", "16:11", "40:33", "24:11", "20:11", "32:11", "80:33",
                "18:11", "15:11", "64:33", "160:99", "4:3", "3:2", "2:1", "Extended SAR")
_INT, _BOOL, _MENU = uapi.V4L2_CTRL_TYPE_INTEGER, uapi.V4L2_CTRL_TYPE_BOOLEAN, uapi.V4L2_CTRL_TYPE_MENU


class Encoder(Instance):
    kind = CoreKind.ENCODER
    min_buffers = amphion.ENC_MIN_BUFFERS

    def __init__(self, memory: Memory, parent: Handle, caller: Caller, *, clock: Clock,
                 fps: float = DEFAULT_FPS, faults: Faults = NO_FAULTS,
                 firmware: Firmware = NoFirmwareLimit()) -> None:
        super().__init__(memory, parent, caller, clock=clock, fps=fps, faults=faults, firmware=firmware)
        self.ring = self.leaf_set(amphion.LEAF_RING)
        self.enc_frames = self.leaf_set(amphion.LEAF_ENC_FRAME)
        self.ref_frames = self.leaf_set(amphion.LEAF_REF_FRAME)
        self.time_per_frame = (1, 30)           # venc_init(): 30 fps until S_PARM
        self.crop = (0, 0, self.queues[OUTPUT].fmt.width, self.queues[OUTPUT].fmt.height)
        self._key_frame_forced = False

    def _extra_controls(self) -> Sequence[Control]:
        """venc_ctrl_init() of Linux 6.1, in its order."""
        force_key = Control(uapi.V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, "Force Key Frame",
                            uapi.V4L2_CTRL_TYPE_BUTTON, 0, 0, 0, 0,
                            uapi.V4L2_CTRL_FLAG_WRITE_ONLY | uapi.V4L2_CTRL_FLAG_EXECUTE_ON_WRITE)
        force_key.on_write = lambda value: setattr(self, "_key_frame_forced", True)
        return (
            Control(uapi.V4L2_CID_MPEG_VIDEO_H264_PROFILE, "H264 Profile", _MENU, 0, 4, 1, 4,
                    menu=H264_PROFILES, skip_mask=~((1 << 0) | (1 << 2) | (1 << 4)) & 0x1F),
            Control(uapi.V4L2_CID_MPEG_VIDEO_H264_LEVEL, "H264 Level", _MENU, 0, 15, 1, 11, menu=H264_LEVELS),
            Control(uapi.V4L2_CID_MPEG_VIDEO_FRAME_RC_ENABLE, "Frame Level Rate Control Enable", _BOOL, 0, 1, 1, 1),
            Control(uapi.V4L2_CID_MPEG_VIDEO_BITRATE_MODE, "Video Bitrate Mode", _MENU, 0, 1, 1, 1,
                    uapi.V4L2_CTRL_FLAG_UPDATE, menu=BITRATE_MODES),
            Control(uapi.V4L2_CID_MPEG_VIDEO_BITRATE, "Video Bitrate", _INT, 16384, 251658240, 1024, 2097152),
            Control(uapi.V4L2_CID_MPEG_VIDEO_BITRATE_PEAK, "Video Peak Bitrate", _INT, 16384, 251658240, 1024,
                    4194304),
            Control(uapi.V4L2_CID_MPEG_VIDEO_GOP_SIZE, "Video GOP Size", _INT, 1, 8000, 1, 30),
            Control(uapi.V4L2_CID_MPEG_VIDEO_B_FRAMES, "Video B Frames", _INT, 0, 4, 1, 0, uapi.V4L2_CTRL_FLAG_UPDATE),
            Control(uapi.V4L2_CID_MPEG_VIDEO_H264_I_FRAME_QP, "H264 I-Frame QP Value", _INT, 1, 51, 1, 26),
            Control(uapi.V4L2_CID_MPEG_VIDEO_H264_P_FRAME_QP, "H264 P-Frame QP Value", _INT, 1, 51, 1, 28),
            Control(uapi.V4L2_CID_MPEG_VIDEO_H264_B_FRAME_QP, "H264 B-Frame QP Value", _INT, 1, 51, 1, 30),
            force_key,
            Control(uapi.V4L2_CID_MPEG_VIDEO_H264_CPB_SIZE, "H264 CPB Buffer Size", _INT,
                    amphion.CPB_MIN_KIB, amphion.CPB_MAX_KIB, 1, amphion.CPB_DEFAULT_KIB),
            Control(uapi.V4L2_CID_MPEG_VIDEO_H264_VUI_SAR_ENABLE, "Aspect Ratio VUI Enable", _BOOL, 0, 1, 1, 1),
            Control(uapi.V4L2_CID_MPEG_VIDEO_H264_VUI_SAR_IDC, "VUI Aspect Ratio IDC", _MENU, 0, 17, 1, 1,
                    menu=VUI_SAR_IDCS),
            Control(uapi.V4L2_CID_MPEG_VIDEO_H264_VUI_EXT_SAR_WIDTH, "Horizontal Size of SAR", _INT, 0, 65535, 1, 1),
            Control(uapi.V4L2_CID_MPEG_VIDEO_H264_VUI_EXT_SAR_HEIGHT, "Vertical Size of SAR", _INT, 0, 65535, 1, 1),
            Control(uapi.V4L2_CID_MPEG_VIDEO_HEADER_MODE, "Sequence Header Mode", _MENU, 0, 1, 1, 1,
                    menu=HEADER_MODES, skip_mask=1 << 0),
        )

    # -- selection, frame sizes, frame rate ------------------------------------------------------

    def selection(self, buf_type: int, target: int) -> tuple[int, int, int, int]:
        """venc_g_selection(): OUTPUT cropping only."""
        if buf_type != uapi.V4L2_BUF_TYPE_VIDEO_OUTPUT:
            raise KernelError(errno.EINVAL, "the encoder has selections on OUTPUT only")
        fmt = self.queues[OUTPUT].fmt
        if target == uapi.V4L2_SEL_TGT_CROP:
            return self.crop
        if target in (uapi.V4L2_SEL_TGT_CROP_DEFAULT, uapi.V4L2_SEL_TGT_CROP_BOUNDS):
            return 0, 0, fmt.width, fmt.height
        raise KernelError(errno.EINVAL, f"selection target {target:#x} is not the encoder's")

    def set_selection(self, buf_type: int, target: int, rect: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """venc_s_selection(): the crop rectangle, aligned to 2; one that does not fit is the frame."""
        if buf_type != uapi.V4L2_BUF_TYPE_VIDEO_OUTPUT or target != uapi.V4L2_SEL_TGT_CROP:
            raise KernelError(errno.EINVAL, "the encoder crops its OUTPUT only")
        fmt = self.queues[OUTPUT].fmt
        left, top, width, height = (amphion.align(v, 2) for v in rect)
        if left + width > fmt.width or top + height > fmt.height or not width or not height:
            left, top, width, height = 0, 0, fmt.width, fmt.height
        self.crop = (left, top, width, height)
        return self.crop

    def frame_size_range(self, fourcc: int) -> tuple[tuple[int, int], tuple[int, int], int]:
        """ENUM_FRAMESIZES: (min, max, step) for a fourcc of either queue, EINVAL for others."""
        if not any(q.find(fourcc) for q in FORMATS[self.kind].values()):
            raise KernelError(errno.EINVAL, f"fourcc {fourcc:#010x} is not the encoder's")
        return amphion.ENC_MIN_SIZE, amphion.ENC_MAX_SIZE, 2

    def set_time_per_frame(self, numerator: int, denominator: int) -> tuple[int, int]:
        """venc_s_parm(): a 0 in either field keeps the old value; the rest is reduced."""
        old_numerator, old_denominator = self.time_per_frame
        numerator, denominator = numerator or old_numerator, denominator or old_denominator
        divisor = math.gcd(numerator, denominator)
        self.time_per_frame = (numerator // divisor, denominator // divisor)
        return self.time_per_frame

    def _internal_leaves(self) -> Sequence[LeafSet]:
        return self.enc_frames, self.ref_frames, self.ring

    def try_format(self, buf_type: int, fmt: PixFormat) -> PixFormat:
        if buf_type == CAPTURE:
            source = self.queues[OUTPUT].fmt
            fmt = replace(fmt, width=source.width, height=source.height)
        return super().try_format(buf_type, fmt)

    def _format_set(self, queue: Queue) -> None:
        capture = self.queues[CAPTURE]
        if queue.is_output:
            self.crop = (0, 0, queue.fmt.width, queue.fmt.height)
            if not capture.buffers:
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
        gop = self.controls.find(uapi.V4L2_CID_MPEG_VIDEO_GOP_SIZE).current
        key = self._key_frame_forced or self.queues[CAPTURE].sequence % gop == 0
        self._key_frame_forced = False
        return (size,), uapi.V4L2_BUF_FLAG_KEYFRAME if key else uapi.V4L2_BUF_FLAG_PFRAME
