"""How many pictures start in a chunk of an H.264 or HEVC Annex B byte stream.

The decoder's firmware parses the stream it is fed; a client such as ``v4l2-ctl
--stream-from`` fills each OUTPUT buffer with as many bytes as fit, so one buffer may hold many
pictures, or part of one. A picture starts at a slice whose first macroblock (H.264:
``first_mb_in_slice`` = 0, the first bit of ue(v) set) or first segment (HEVC:
``first_slice_segment_in_pic_flag``) opens it (ITU-T H.264 7.3.3, H.265 7.3.6.1).
"""
from __future__ import annotations

import re
from typing import Optional

from vpu_sim import uapi

_START_CODE = re.compile(b"\x00\x00\x01")
_H264_SLICES = (1, 5)          # non-IDR and IDR coded slices


def _nal_units(data: bytes) -> list[int]:
    """The offsets just after each start code."""
    return [match.end() for match in _START_CODE.finditer(data)]


def pictures_starting(codec: int, data: bytes) -> Optional[int]:
    """The pictures that start in ``data``; None if it holds no start code of a stream this
    module reads (another codec, or bytes that are no bitstream at all)."""
    if codec not in (uapi.V4L2_PIX_FMT_H264, uapi.V4L2_PIX_FMT_HEVC):
        return None
    starts = _nal_units(data)
    if not starts:
        return None
    count = 0
    for at in starts:
        if codec == uapi.V4L2_PIX_FMT_H264:
            if at + 1 < len(data) and data[at] & 0x1F in _H264_SLICES and data[at + 1] & 0x80:
                count += 1
        elif at + 2 < len(data) and (data[at] >> 1) & 0x3F < 32 and data[at + 2] & 0x80:
            count += 1
    return count
