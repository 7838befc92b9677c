"""vpu_sim.driver.amphion.model against the worked numbers of docs/spec/amphion-model.md."""
from __future__ import annotations

import pytest

from vpu_sim import uapi
from vpu_sim.driver.amphion import model as amphion
from vpu_sim.driver.amphion.model import CoreKind


def test_compressed_plane_is_width_times_height_within_128k_and_8m() -> None:
    assert amphion.compressed_plane_size(1920, 1080) == 2_073_600
    assert amphion.page_align(amphion.compressed_plane_size(1920, 1080)) == 2_076_672
    assert amphion.compressed_plane_size(64, 64) == 128 * 1024
    assert amphion.compressed_plane_size(4096, 2304) == 8 * 1024 * 1024


@pytest.mark.parametrize("width, height, depth, planes", [
    (1920, 1080, 8, (2_359_296, 1_310_720)),
    (3840, 2160, 8, (8_355_840, 4_423_680)),
    (1920, 1080, 10, (2_949_120, 1_638_400)),
])
def test_nv12m_8l128_planes(width: int, height: int, depth: int, planes: tuple[int, int]) -> None:
    assert amphion.nv12m_8l128_plane_sizes(width, height, depth) == planes


def test_interlaced_frames_align_height_to_256() -> None:
    luma, chroma = amphion.nv12m_8l128_plane_sizes(1920, 1080, interlaced=True)
    assert (luma, chroma) == (2048 * 1280, 2048 * 1280 // 2)


def test_mbi_and_dcp() -> None:
    assert amphion.mbi_size(2_359_296, 1_310_720) == 917_504
    assert amphion.mbi_size(3000, 1000) == 0x800                   # 1000 rounds up to 2 KiB
    assert amphion.dcp_size(1920, 1080, 1) == 2_040_000
    assert amphion.dcp_size(1920, 1080, 2) == 4_080_000
    assert amphion.dcp_size(320, 240, 1) == 0x100000        # 300 MBs * 250 clamps up
    assert amphion.dcp_size(3840, 2160, 24) == 0x3000000    # clamps down
    assert amphion.dcp_size(1920, 1080, 0) == 0x3000000


def test_sequence_header_for_1080p_h264() -> None:
    header = amphion.sequence_header(uapi.V4L2_PIX_FMT_H264, 1920, 1080)
    assert header.num_ref == 4                       # level 4.1: 32768 DPB MBs / 8160 MBs
    assert header.min_capture_buffers == header.num_ref + header.num_dpb == 7
    assert header.mbi_count == 7 and header.mbi_bytes == 917_504
    assert header.dcp_count == 2 and header.dcp_bytes == 2_040_000
    assert header.capture_planes == (2_359_296, 1_310_720)


def test_sequence_header_limits() -> None:
    tiny = amphion.sequence_header(uapi.V4L2_PIX_FMT_H264, 64, 64)
    assert tiny.num_ref == 16 and tiny.mbi_count == 19 <= 32
    assert amphion.sequence_header(uapi.V4L2_PIX_FMT_VP8, 1920, 1080).dcp_count == 0
    assert amphion.sequence_header(uapi.V4L2_PIX_FMT_HEVC, 3840, 2160).num_ref == 6


def test_encoder_sizes() -> None:
    assert amphion.encoder_nv12m_plane_sizes(1920, 1080) == (2_073_600, 1_036_800)
    assert amphion.encoder_nv12m_plane_sizes(1918, 1080) == (2_073_600, 1_036_800)  # stride aligns to 16
    assert amphion.encoder_ring_size(amphion.CPB_DEFAULT_KIB) == 0x300000
    assert amphion.encoder_ring_size(64) == 0x300000
    assert amphion.encoder_ring_size(4096) == 12 * 1024 * 1024
    # An NV12 frame of 1080p is 3,110,400 bytes; the leaf holds it page-aligned.
    assert amphion.encoder_frame_size(1920, 1080) == 3_110_400


def test_boards_cores_and_names() -> None:
    qxp = amphion.board_cores("imx8qxp")
    assert [core.kind for core in qxp] == [CoreKind.DECODER, CoreKind.ENCODER]
    assert [core.device for core in qxp] == ["2d080000.vpu-core", "2d090000.vpu-core"]
    assert (qxp[0].fw_bytes, qxp[0].rpc_bytes) == (32 << 20, 0x100000)
    assert (qxp[1].fw_bytes, qxp[1].rpc_bytes) == (2 << 20, 0x700000)
    assert all(core.max_instances == 8 for core in qxp)
    qm = amphion.board_cores("imx8qm")
    assert [core.kind for core in qm].count(CoreKind.ENCODER) == 2
    assert [core.kind for core in qm].count(CoreKind.DECODER) == 1
    assert amphion.VPU_DEVICE == "2c000000.vpu"
    assert amphion.VIDEO_NODE_NAMES == {CoreKind.DECODER: "amphion-vpu-decoder",
                                        CoreKind.ENCODER: "amphion-vpu-encoder"}
    with pytest.raises(ValueError, match="imx8qm, imx8qxp"):
        amphion.board_cores("imx8mp")
