"""The NXP Amphion VPU model: names, cores, limits and every buffer size, as pure functions.

The numbers are the contract of ``docs/spec/amphion-model.md`` (from the upstream driver
``drivers/media/platform/amphion/`` and the RFC's patch 7); ``tests/test_vpu_amphion.py`` holds
the spec's worked examples. Where the spec leaves a choice open (how many reference frames a
stream needs, how many encoder frames the firmware asks for) the rule picked is written here.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from vpu_sim import uapi

PAGE_SIZE = 4096
SZ_1K = 1 << 10
SZ_128K = 128 << 10
SZ_8M = 8 << 20

# -- names ---------------------------------------------------------------------------------------
TRACKER_ROOT = "amphion-vpu"          # the RFC's root: debugfs v4l2-memtrack/amphion-vpu
VPU_DEVICE = "2c000000.vpu"
DISPLAY_DEVICE = "display-subsystem"
DRIVER_NAME = "amphion-vpu"           # v4l2_capability.driver, the platform driver's name
BUS_INFO = "platform: amphion-vpu"
MEDIA_MODEL = "amphion-vpu"           # media_device_info.model (vpu_init_media_device())
# The VPU's platform device under /sys/devices: the parent of the video and media nodes
# (vpu@2c000000 of imx8-ss-vpu.dtsi, a top-level node).
SYSFS_PARENT = "platform/" + VPU_DEVICE
NOTIFY_DELAY_MS = 200                 # VPU_NOTIFY_DELAY_MS: coalescing of the memory-usage control

# Node and leaf names of the RFC's tree.
NODE_INSTANCE = "instance"
NODE_OUTPUT = "output"
NODE_CAPTURE = "capture"
LEAF_FW = "fw"
LEAF_RPC = "rpc"
LEAF_RING = "bitstream-ring-buffer"
LEAF_UDATA = "udata"
LEAF_MBI = "mbi"
LEAF_DCP = "dcp"
LEAF_ENC_FRAME = "enc-frame"
LEAF_REF_FRAME = "ref-frame"


def align(value: int, alignment: int) -> int:
    """The kernel's ALIGN() for any positive alignment."""
    return -(-value // alignment) * alignment


def page_align(nbytes: int) -> int:
    """PAGE_ALIGN(): what vb2's allocators really reserve for a plane."""
    return align(nbytes, PAGE_SIZE)


def clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


# -- cores, boards and video nodes ---------------------------------------------------------------
class CoreKind(Enum):
    DECODER = "decoder"
    ENCODER = "encoder"


@dataclass(frozen=True)
class Core:
    kind: CoreKind
    device: str          # the core's platform device name
    fw_bytes: int        # boot region (reserved memory, tracked as leaf "fw")
    rpc_bytes: int       # rpc region (reserved memory, tracked as leaf "rpc")
    max_instances: int   # firmware stream slots


MAX_INSTANCES = 8
# Malone: 32 MiB boot region; rpc 0x80000 + log 0x80000.
DECODER_FW_BYTES = 0x2000000
DECODER_RPC_BYTES = 0x100000
# Windsor: 2 MiB boot region; rpc 0x100000 + act 0x600000, 0xc0000 of act per instance (hence 8).
ENCODER_FW_BYTES = 0x200000
ENCODER_RPC_BYTES = 0x700000

DECODER_CORE = Core(CoreKind.DECODER, "2d080000.vpu-core", DECODER_FW_BYTES, DECODER_RPC_BYTES, MAX_INSTANCES)
ENCODER_CORE = Core(CoreKind.ENCODER, "2d090000.vpu-core", ENCODER_FW_BYTES, ENCODER_RPC_BYTES, MAX_INSTANCES)
# i.MX8QM's second encoder core sits after the first in the VPU's address space.
ENCODER_CORE_2 = Core(CoreKind.ENCODER, "2d0a0000.vpu-core", ENCODER_FW_BYTES, ENCODER_RPC_BYTES, MAX_INSTANCES)

BOARDS: dict[str, tuple[Core, ...]] = {
    "imx8qxp": (DECODER_CORE, ENCODER_CORE),
    "imx8qm": (DECODER_CORE, ENCODER_CORE, ENCODER_CORE_2),
}


def board_cores(board: str) -> tuple[Core, ...]:
    """The cores of a board; a clear error names the boards there are."""
    try:
        return BOARDS[board]
    except KeyError:
        raise ValueError(f"unknown board {board!r}; boards: {', '.join(sorted(BOARDS))}") from None


VIDEO_NODE_NAMES = {CoreKind.DECODER: "amphion-vpu-decoder", CoreKind.ENCODER: "amphion-vpu-encoder"}
CARD_NAMES = {CoreKind.DECODER: "amphion vpu decoder", CoreKind.ENCODER: "amphion vpu encoder"}

# -- decoder -------------------------------------------------------------------------------------
DEC_MIN_BUFFERS = 8              # each queue, and CAPTURE until the sequence header is known
DEC_DEFAULT_SIZE = (1280, 720)
DEC_MIN_SIZE = (64, 64)
DEC_MAX_SIZE = (4096, 2304)      # Malone decodes up to 4K
DEC_RING_BYTES = 0xC00000        # 12 MiB whatever the codec and resolution
DEC_UDATA_BYTES = 0x1000
DEC_MAX_MBI = 32
DCP_BYTES_PER_MB = 250
DCP_MIN = 0x100000
DCP_MAX = 0x3000000


def compressed_plane_size(width: int, height: int) -> int:
    """sizeimage of a bitstream plane: width*height clamped to [128 KiB, 8 MiB]."""
    return clamp(width * height, SZ_128K, SZ_8M)


def nv12m_8l128_bytesperline(width: int, depth: int = 8) -> int:
    return align(align(-(-width * depth // 8), 8), 256)


def nv12m_8l128_plane_sizes(width: int, height: int, depth: int = 8,
                            interlaced: bool = False) -> tuple[int, int]:
    """(luma, chroma) sizes of an NV12M_8L128 (or 10BE_8L128 when depth is 10) frame."""
    bpl = nv12m_8l128_bytesperline(width, depth)
    aligned_height = align(height, 256 if interlaced else 128)
    return bpl * aligned_height, bpl * align(aligned_height, 256) // 2


def mbi_size(luma: int, chroma: int) -> int:
    """One motion-information buffer: a quarter of the frame, in 2 KiB units."""
    return align((luma + chroma) // 4, 0x800)


def macroblocks(width: int, height: int) -> int:
    return -(-width // 16) * -(-height // 16)


def dcp_size(width: int, height: int, chunks: int) -> int:
    """One DCP buffer: 250 bytes per macroblock per chunk, within [1 MiB, 48 MiB]; 48 MiB if chunks is 0."""
    if chunks == 0:
        return DCP_MAX
    return clamp(macroblocks(width, height) * DCP_BYTES_PER_MB * chunks, DCP_MIN, DCP_MAX)


# H.264 levels as (MaxFS, MaxDpbMbs) from Table A-1, smallest first.
_H264_LEVELS = ((1620, 8100), (3600, 18000), (5120, 20480), (8192, 32768), (8704, 34816),
                (22080, 110400), (36864, 184320), (139264, 696320))
# Frames held for display besides the references: one shown, one ready, one being decoded.
DISPLAY_FRAMES = 3
DCP_BUFFERS = 2          # parser and decoder work on alternate DCP buffers
DCP_CHUNKS = 1
_DCP_CODECS = (uapi.V4L2_PIX_FMT_H264, uapi.V4L2_PIX_FMT_HEVC)
_FIXED_REFERENCES = {uapi.V4L2_PIX_FMT_HEVC: 6,   # MaxDpbSize at a level's full picture size
                     uapi.V4L2_PIX_FMT_VP8: 3}    # last, golden and altref


@dataclass(frozen=True)
class SequenceHeader:
    """What the firmware reports (and asks for) once it has parsed a stream's sequence header."""
    codec: int
    width: int
    height: int
    depth: int
    num_ref: int
    num_dpb: int
    mbi_count: int
    dcp_count: int
    dcp_chunks: int

    @property
    def min_capture_buffers(self) -> int:
        return self.num_ref + self.num_dpb

    @property
    def decoded_size(self) -> tuple[int, int]:
        """The frame the firmware decodes into: whole macroblocks (1920x1080 decodes as
        1920x1088); the stream's own size is the visible rectangle inside it."""
        return align(self.width, 16), align(self.height, 16)

    @property
    def capture_planes(self) -> tuple[int, int]:
        return nv12m_8l128_plane_sizes(self.width, self.height, self.depth)

    @property
    def mbi_bytes(self) -> int:
        return mbi_size(*self.capture_planes)

    @property
    def dcp_bytes(self) -> int:
        return dcp_size(self.width, self.height, self.dcp_chunks)


def reference_frames(codec: int, width: int, height: int) -> int:
    """Frames a stream may reference: the H.264 level's DPB for this size; fixed for other codecs."""
    if codec == uapi.V4L2_PIX_FMT_H264:
        mbs = macroblocks(width, height)
        max_dpb_mbs = next((dpb for max_fs, dpb in _H264_LEVELS if mbs <= max_fs), _H264_LEVELS[-1][1])
        return clamp(max_dpb_mbs // mbs, 1, 16)
    return _FIXED_REFERENCES.get(codec, 2)   # MPEG-2, MPEG-4, H.263: forward and backward


def sequence_header(codec: int, width: int, height: int, depth: int = 8) -> SequenceHeader:
    num_ref = reference_frames(codec, width, height)
    frames = num_ref + DISPLAY_FRAMES
    return SequenceHeader(codec=codec, width=width, height=height, depth=depth, num_ref=num_ref,
                          num_dpb=DISPLAY_FRAMES, mbi_count=min(frames, DEC_MAX_MBI),
                          dcp_count=DCP_BUFFERS if codec in _DCP_CODECS else 0,
                          dcp_chunks=DCP_CHUNKS)


# -- encoder -------------------------------------------------------------------------------------
ENC_MIN_BUFFERS = 6
ENC_DEFAULT_SIZE = (1280, 720)
ENC_MIN_SIZE = (64, 64)
ENC_MAX_SIZE = (1920, 1920)      # no 4K encode
ENC_RING_MIN = 0x300000
CPB_MIN_KIB, CPB_MAX_KIB, CPB_DEFAULT_KIB = 64, 10240, 1024
# The firmware asks for at most 8 of each; usually up to 6 source and 3 reference frames.
ENC_SRC_FRAMES = 6
ENC_REF_FRAMES = 3


def encoder_nv12m_plane_sizes(width: int, height: int) -> tuple[int, int]:
    """(luma, chroma) of the encoder's NV12M input: 16-aligned stride, chroma half the luma."""
    luma = align(width, 16) * height
    return luma, luma // 2


def encoder_ring_size(cpb_kib: int) -> int:
    """The encoder's bitstream ring: three CPBs, at least 3 MiB."""
    return max(ENC_RING_MIN, cpb_kib * SZ_1K * 3)


def encoder_frame_size(width: int, height: int) -> int:
    """One enc-frame or ref-frame buffer: an NV12 frame of the stream (1080p: 3,110,400).

    The tracker records the frame's size; the CMA allocation behind it is page-aligned (heaps
    hand out whole pages), as dma_alloc_coherent's is.
    """
    return sum(encoder_nv12m_plane_sizes(width, height))
