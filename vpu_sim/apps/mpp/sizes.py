"""Buffer sizes as Rockchip's MPP user library computes them on RK3588 (vdpu34x decoder HALs,
vepu580 encoder HALs), as pure functions. Sources: rockchip-linux/mpp @ ee946af0 (file and
function named on each); the derivation and worked examples: docs/spec/rockchip-rk3588.md.

Every buffer is a dma-heap allocation, so the kernel rounds it to whole pages (PAGE_ALIGN in
dma-heap.c): ``page_align`` gives what rk_dmabuf and sessions-summary count.
"""
from __future__ import annotations

from dataclasses import dataclass

PAGE_SIZE = 4096
SZ_4K, SZ_8K, SZ_1K = 4096, 8192, 1024
HAL_TASKS = 3          # fast mode (mpp_dec_cfg.cpp fast_parse=1): MAX_GEN_REG register sets
PACKET_SLOTS = 3       # the packet group's limit (mpp.cpp)
DISPLAY_QUEUE = 4      # frames the application holds (shown or queued); the simulation's choice
CODECS = ("hevc", "h264", "vp9")
ENC_CODECS = ("h264", "hevc")


def align(value: int, alignment: int) -> int:
    """MPP_ALIGN for any positive alignment."""
    return -(-value // alignment) * alignment


def page_align(nbytes: int) -> int:
    return align(nbytes, PAGE_SIZE)


def _odd_256(value: int) -> int:
    """hevc_hor_align / vp9_hor_align / rkv_hor_align_256_odds: an odd multiple of 256."""
    return align(value, 256) | 256


@dataclass(frozen=True)
class Stream:
    codec: str
    width: int
    height: int
    depth: int = 8

    @property
    def mb_width(self) -> int:
        return align(self.width, 16)

    @property
    def mb_height(self) -> int:
        return align(self.height, 16)


# -- decoder frames (mpp/base/mpp_buf_slot.cpp generate_info_set(), default ratio 9/5) -------

def frame_size(s: Stream) -> int:
    """One decoded frame's buffer, NV12 (or 10-bit NV15) in MPP's internal frame group."""
    if s.codec == "hevc":
        # h265d_parser.c: hor stride ALIGN(coded_width, 64) * depth / 8, ver = coded height;
        # hal_h265d_vdpu34x.c: hevc_hor_align (odd multiple of 256), hevc_ver_align (8).
        hor = _odd_256(align(s.width, 64) * s.depth // 8)
        ver = align(s.height, 8)
        return hor * ver * 9 // 5
    if s.codec == "h264":
        # h264d_init.c: hor = MB width * depth / 8, ver = MB height; hal_h264d_vdpu34x.c: 16
        # aligned, or an odd multiple of 256 past 1920x1088; rkv_len_align: 2 * ALIGN(hor*ver, 16).
        hor = s.mb_width * s.depth // 8
        hor = _odd_256(hor) if s.width > 1920 or s.height > 1088 else align(hor, 16)
        return 2 * align(hor * align(s.mb_height, 16), 16)
    # vp9d_parser.c: hor = width * depth / 8, ver = height; hal_vp9d_com.c: vp9_hor_align (odd
    # multiple of 256), vp9_ver_align (64).
    hor = _odd_256(s.width * s.depth // 8)
    return hor * align(s.height, 64) * 9 // 5


def dpb_frames(s: Stream) -> int:
    """Reference frames the stream keeps: HEVC MaxDpbSize at a level's largest picture (6,
    ITU-T H.265 A.4.2); H.264 MaxDpbMbs / frame MBs (levels 4.1 / 5.1 / 6.1 by size, A.3.1);
    VP9 last, golden and altref."""
    if s.codec == "hevc":
        return 6
    if s.codec == "h264":
        mbs = (s.mb_width // 16) * (s.mb_height // 16)
        max_dpb_mbs = 32768 if mbs <= 8192 else 184320 if mbs <= 36864 else 696320
        return max(1, min(16, max_dpb_mbs // mbs))
    return 3


def frame_count(s: Stream) -> int:
    """Frames the decoder's frame group holds in steady state: the references, the frames the
    application holds (DISPLAY_QUEUE) and the one being decoded."""
    return dpb_frames(s) + DISPLAY_QUEUE + 1


# -- decoder HAL buffers (mpp/hal/rkdec) -----------------------------------------------------

def colmv_size(s: Stream) -> int:
    """vdpu34x_get_colmv_size() (vdpu34x_com.c) with each HAL's arguments; one per frame slot."""
    if s.codec == "hevc":      # hal_h265d_vdpu34x.c: (width, height, ctu 64, 16 bytes, 16, compressed)
        width, height, ctu, nbytes, size = s.width, s.height, 64, 16, 16
    elif s.codec == "h264":    # hal_h264d_vdpu34x.c: ALIGN(MBs * 16, 64), ctu 16, 16 bytes, 4, compressed
        width, height, ctu, nbytes, size = align(s.mb_width, 64), align(s.mb_height, 64), 16, 16, 4
    else:                      # hal_vp9d_vdpu34x.c: (width, height, VP9_CTU_SIZE 64, 16 bytes, 8, compressed)
        width, height, ctu, nbytes, size = s.width, s.height, 64, 16, 8
    segment_w = 64 * size * size // ctu
    seg_w, seg_h = align(width, segment_w) // segment_w, align(height, ctu) // ctu
    return align(align(seg_w, 16) * seg_h + seg_w * seg_h * 64 * nbytes, 128)


def rcb_size(s: Stream) -> int:
    """vdpu34x_get_rcb_buf_size(): row buffers by width, column buffers by height, each 64
    aligned; HEVC passes the picture size, H.264 and VP9 theirs aligned to 64."""
    return sum(size for _, _, size in rcb_segments(s))


def rcb_segments(s: Stream) -> list[tuple[int, int, int]]:
    """(register, offset, size) of each RCB segment in the buffer, in vdpu34x_get_rcb_buf_size()'s order."""
    width, height = (s.width, s.height) if s.codec == "hevc" else (align(s.width, 64), align(s.height, 64))
    order = ((139, width, 22), (133, width, 6), (134, width, 1), (136, width, 3), (137, width, 6),
             (140, width, 6), (141, width, 11), (135, height, 1), (138, height, 3), (142, height, 67))
    segments, offset = [], 0
    for reg, length, coeff in order:
        size = align(length * coeff, 64)
        segments.append((reg, offset, size))
        offset += size
    return segments


def table_sizes(s: Stream) -> tuple[int, ...]:
    """The HAL's own tables, one buffer each."""
    if s.codec == "hevc":  # hal_h265d_vdpu34x.c ALL_BUFFER_SIZE(3): cabac + 3 x (sps/pps + rps + scaling list)
        return (align(27456, SZ_4K) + HAL_TASKS * (align(112 * 64, SZ_4K) + align(400 * 8, SZ_4K)
                                                   + align(81 * 1360, SZ_4K)),)
    if s.codec == "h264":  # hal_h264d_vdpu34x.c VDPU34X_INFO_BUFFER_SIZE(3)
        return (align(928 * 4 + 128, SZ_4K) + HAL_TASKS * (align(256 * 48 + 128, SZ_4K) + align(384, SZ_4K)
                                                          + align(6 * 16 + 2 * 64 + 128, SZ_4K)),)
    # hal_vp9d_vdpu34x.c hal_vp9d_alloc_res(): 4 prob_loop and 1 prob_default of PROB_SIZE 4864,
    # 3 probe buffers (ALIGN(PROB_SIZE, 4K) + ALIGN(COUNT_SIZE 13208, 4K)), segid 2 x ALIGN(73728 * 4, 4K).
    probe = align(4864, SZ_4K) + align(13208, SZ_4K)
    return (4864,) * 5 + (probe,) * HAL_TASKS + (2 * align(73728 * 4, SZ_4K),)


def packet_size(s: Stream) -> int:
    """The parser's stream buffer: H.264 BITSTREAM_MAX_SIZE (h264d_global.h), HEVC and VP9 512 KiB
    (h265d_parser.c, vp9d_api.c); MPP grows them only for larger frames, which these streams lack."""
    return 2 << 20 if s.codec == "h264" else 512 << 10


# -- encoder (mpp/hal/rkenc, mpp/codec/mpp_enc_impl.cpp) -------------------------------------

@dataclass(frozen=True)
class EncoderBuffers:
    recon: int      # reconstructed frame (FBC header + body)
    header: int     # the FBC header's part of it (the body follows at this offset)
    thumb: int      # its 1/4 thumbnail
    cmv: int        # H.265 only: its motion vectors (0 for H.264)
    packet: int     # the output bitstream buffer
    source: int     # one NV12 input frame (the application's)


def encoder_buffers(codec: str, width: int, height: int) -> EncoderBuffers:
    if codec == "h264":  # hal_h264e_vepu580.c setup_hal_bufs()
        aw, ah = align(width, 64), align(height, 16) + 16
        header = align(aw * ah // 64, SZ_8K)
        recon = header + aw * ah * 3 // 2
        thumb = align(aw // 64 * ah // 64 * 256, SZ_8K)
        cmv = 0
    else:                # hal_h265e_vepu580.c vepu580_h265_setup_hal_bufs()
        mw, mh = (width + 63) // 64, (height + 63) // 64 + 1
        header = align((mw * mh) << 6, SZ_8K)
        recon = header + ((mw * mh) << 12) * 3 // 2
        thumb = (mw * mh) << 8
        cmv = align(mw * mh * 16 * 6, 256)
    packet = align(width, 16) * align(height, 16)  # mpp_enc_check_pkt_buf(): 1 byte per pixel
    source = align(width, 16) * align(height, 16) * 3 // 2
    return EncoderBuffers(recon, header, thumb, cmv, packet, source)


# dma-heap names the buffers come from (osal/allocator/allocator_dma_heap.c heap_infos[]): MPP's
# frame and packet groups are cachable, the HAL's internal groups are not.
HEAP_CACHED, HEAP_UNCACHED = "system", "system-uncached"
