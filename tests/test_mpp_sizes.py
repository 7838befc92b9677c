"""MPP's buffer sizes on RK3588 against the worked examples of docs/spec/rockchip-rk3588.md §7,
each derived by hand from rockchip-linux/mpp's sources (vdpu34x and vepu580 HALs)."""
from __future__ import annotations

import pytest

from vpu_sim.apps.mpp.sizes import (
    HAL_TASKS,
    PACKET_SLOTS,
    Stream,
    colmv_size,
    encoder_buffers,
    frame_count,
    frame_size,
    packet_size,
    page_align,
    rcb_size,
    table_sizes,
)

KiB = 1024


def decoder_session_bytes(s: Stream) -> int:
    """What a decoder session imports, page-aligned: frames with their colmv, 3 RCB, the tables, 3 packets."""
    frames = frame_count(s) * (page_align(frame_size(s)) + page_align(colmv_size(s)))
    return (frames + HAL_TASKS * page_align(rcb_size(s)) + sum(page_align(t) for t in table_sizes(s))
            + PACKET_SLOTS * page_align(packet_size(s)))


@pytest.mark.parametrize("codec, width, height, frame, colmv, rcb, slots, session_kib", [
    ("hevc", 1920, 1080, 4478976, 139648, 182336, 11, 52140),     # 2304 x 1080 x 9/5
    ("hevc", 3840, 2160, 14929920, 522880, 364672, 11, 169016),   # 3840 is an odd multiple of 256 already
    ("hevc", 7680, 4320, 61710336, 2091136, 729216, 11, 689460),  # 7936 x 4320 x 9/5: the guide's decoder
    ("h264", 1920, 1080, 4177920, 2091136, 182848, 9, 61876),     # 2 x 1920 x 1088
    ("h264", 3840, 2160, 16588800, 8364544, 365696, 10, 251020),
    ("vp9", 1920, 1080, 4512153, 522880, 182848, 8, 42124),       # 2304 x 1088 x 9/5
    ("vp9", 3840, 2160, 15040512, 2091136, 365696, 8, 137160),
])
def test_decoder_buffers(codec: str, width: int, height: int, frame: int, colmv: int, rcb: int, slots: int,
                         session_kib: int) -> None:
    stream = Stream(codec, width, height)
    assert (frame_size(stream), colmv_size(stream), rcb_size(stream)) == (frame, colmv, rcb)
    assert frame_count(stream) == slots
    assert decoder_session_bytes(stream) == session_kib * KiB


def test_tables() -> None:
    assert table_sizes(Stream("hevc", 1920, 1080)) == (397312,)
    assert table_sizes(Stream("h264", 1920, 1080)) == (77824,)
    assert sum(page_align(t) for t in table_sizes(Stream("vp9", 1920, 1080))) == 688 * KiB


@pytest.mark.parametrize("codec, width, height, kib", [
    ("h264", 1920, 1080, (3148, 136, 0, 2040, 3060)),
    ("h264", 3840, 2160, (12368, 512, 0, 8100, 12152)),
    ("hevc", 1920, 1080, (3280, 136, 52, 2040, 3060)),
    ("hevc", 3840, 2160, (12736, 528, 200, 8100, 12152)),   # the 12152 KiB input, as in a real capture
])
def test_encoder_buffers(codec: str, width: int, height: int, kib: tuple[int, ...]) -> None:
    b = encoder_buffers(codec, width, height)
    assert tuple(page_align(n) // KiB for n in (b.recon, b.thumb, b.cmv, b.packet, b.source)) == kib
