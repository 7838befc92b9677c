"""The formats each queue of the decoder and encoder offers, and TRY_FMT's adjustment rules.

As the Amphion driver does (``vpu_try_fmt_common``): a type the device does not have is EINVAL;
an unknown fourcc is replaced by the queue's first format; sizes are clamped to the core's
limits; every plane gets at least the size the model computes, more if the caller asked; the
format's ``flags`` are the table's (so a decoder bitstream says DYN_RESOLUTION). Before the
driver sees a format, the V4L2 core replaces colorimetry values it does not know with 0
(``v4l_sanitize_format``).

The table is ``vdec_formats[]``/``venc_formats[]`` of Linux 6.1, with one deviation: NV12M is
described "Y/CbCr 4:2:0 (N-C)", as v4l2-compliance 1.22.1 expects, not 6.1's "Y/UV 4:2:0 (N-C)"
(README, "Differences from a board").
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, replace
from typing import Optional

from memtrackfs.errors import KernelError
from vpu_sim import uapi
from vpu_sim.driver.amphion import model as amphion
from vpu_sim.driver.amphion.model import CoreKind

OUTPUT = uapi.V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
CAPTURE = uapi.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE


@dataclass(frozen=True)
class FormatSpec:
    fourcc: int
    description: str      # what the kernel's v4l_fill_fmtdesc() reports
    planes: int
    compressed: bool = False
    depth: int = 8
    dyn_resolution: bool = False  # V4L2_FMT_FLAG_DYN_RESOLUTION: the stream may change size


@dataclass(frozen=True)
class PlaneFormat:
    sizeimage: int
    bytesperline: int


@dataclass(frozen=True)
class PixFormat:
    """struct v4l2_pix_format_mplane, without the padding."""
    width: int
    height: int
    pixelformat: int
    field: int = uapi.V4L2_FIELD_NONE
    colorspace: int = 0
    planes: tuple[PlaneFormat, ...] = ()
    flags: int = 0
    ycbcr_enc: int = 0
    quantization: int = 0
    xfer_func: int = 0

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(plane.sizeimage for plane in self.planes)




def _bitstream(fourcc: int, description: str, dyn_resolution: bool = True) -> FormatSpec:
    return FormatSpec(fourcc, description, 1, compressed=True, dyn_resolution=dyn_resolution)


@dataclass(frozen=True)
class QueueFormats:
    formats: tuple[FormatSpec, ...]
    min_size: tuple[int, int]
    max_size: tuple[int, int]

    def find(self, fourcc: int) -> Optional[FormatSpec]:
        return next((spec for spec in self.formats if spec.fourcc == fourcc), None)


_DECODER = {
    OUTPUT: QueueFormats((
        _bitstream(uapi.V4L2_PIX_FMT_H264, "H.264"),
        _bitstream(uapi.V4L2_PIX_FMT_H264_MVC, "H.264 MVC"),
        _bitstream(uapi.V4L2_PIX_FMT_HEVC, "HEVC"),
        _bitstream(uapi.V4L2_PIX_FMT_VC1_ANNEX_G, "VC-1 (SMPTE 412M Annex G)"),
        _bitstream(uapi.V4L2_PIX_FMT_VC1_ANNEX_L, "VC-1 (SMPTE 412M Annex L)", dyn_resolution=False),
        _bitstream(uapi.V4L2_PIX_FMT_MPEG2, "MPEG-2 ES"),
        _bitstream(uapi.V4L2_PIX_FMT_MPEG4, "MPEG-4 Part 2 ES"),
        _bitstream(uapi.V4L2_PIX_FMT_XVID, "Xvid"),
        _bitstream(uapi.V4L2_PIX_FMT_VP8, "VP8"),
        _bitstream(uapi.V4L2_PIX_FMT_H263, "H.263"),
    ), amphion.DEC_MIN_SIZE, amphion.DEC_MAX_SIZE),
    CAPTURE: QueueFormats((
        FormatSpec(uapi.V4L2_PIX_FMT_NV12M_8L128, "NV12M (8x128 Linear)", 2),
        FormatSpec(uapi.V4L2_PIX_FMT_NV12M_10BE_8L128, "10-bit NV12M (8x128 Linear, BE)", 2, depth=10),
    ), amphion.DEC_MIN_SIZE, amphion.DEC_MAX_SIZE),
}
_ENCODER = {
    OUTPUT: QueueFormats((FormatSpec(uapi.V4L2_PIX_FMT_NV12M, "Y/CbCr 4:2:0 (N-C)", 2),),
                         amphion.ENC_MIN_SIZE, amphion.ENC_MAX_SIZE),
    CAPTURE: QueueFormats((_bitstream(uapi.V4L2_PIX_FMT_H264, "H.264", dyn_resolution=False),),
                          amphion.ENC_MIN_SIZE, amphion.ENC_MAX_SIZE),
}
FORMATS = {CoreKind.DECODER: _DECODER, CoreKind.ENCODER: _ENCODER}


def check_type(buf_type: int) -> None:
    if buf_type not in (OUTPUT, CAPTURE):
        raise KernelError(errno.EINVAL, f"buffer type {buf_type} is not supported: a mem2mem multi-planar "
                                        f"device has OUTPUT_MPLANE ({OUTPUT}) and CAPTURE_MPLANE ({CAPTURE})")


def queue_formats(kind: CoreKind, buf_type: int) -> QueueFormats:
    check_type(buf_type)
    return FORMATS[kind][buf_type]


def fmtdesc_flags(spec: FormatSpec) -> int:
    """Bitstreams are compressed (v4l_fill_fmtdesc() adds it); most decoder ones change size."""
    flags = uapi.V4L2_FMT_FLAG_COMPRESSED if spec.compressed else 0
    return flags | (uapi.V4L2_FMT_FLAG_DYN_RESOLUTION if spec.dyn_resolution else 0)


def sanitize_colorimetry(fmt: PixFormat) -> PixFormat:
    """v4l_sanitize_colorspace(): values the core does not know become 0 (default)."""
    colorspace, ycbcr_enc, quantization, xfer_func = fmt.colorspace, fmt.ycbcr_enc, fmt.quantization, fmt.xfer_func
    if colorspace > uapi.V4L2_COLORSPACE_DCI_P3 or colorspace == 4:  # 4: the removed BT878
        colorspace = ycbcr_enc = quantization = xfer_func = 0
    if ycbcr_enc >= uapi.V4L2_YCBCR_ENC_LAST:
        ycbcr_enc = 0
    if quantization > uapi.V4L2_QUANTIZATION_LIM_RANGE:
        quantization = 0
    if xfer_func >= uapi.V4L2_XFER_FUNC_LAST:
        xfer_func = 0
    return replace(fmt, colorspace=colorspace, ycbcr_enc=ycbcr_enc, quantization=quantization, xfer_func=xfer_func)


def plane_layout(spec: FormatSpec, width: int, height: int) -> tuple[PlaneFormat, ...]:
    """The model's minimum plane sizes and strides for a format at a size."""
    if spec.compressed:
        return (PlaneFormat(amphion.compressed_plane_size(width, height), 0),)
    if spec.fourcc == uapi.V4L2_PIX_FMT_NV12M:
        luma, chroma = amphion.encoder_nv12m_plane_sizes(width, height)
        stride = amphion.align(width, 16)
    else:
        luma, chroma = amphion.nv12m_8l128_plane_sizes(width, height, spec.depth)
        stride = amphion.nv12m_8l128_bytesperline(width, spec.depth)
    return PlaneFormat(luma, stride), PlaneFormat(chroma, stride)


def try_format(kind: CoreKind, buf_type: int, asked: PixFormat) -> PixFormat:
    """TRY_FMT: the nearest format the queue supports."""
    queue = queue_formats(kind, buf_type)
    spec = queue.find(asked.pixelformat) or queue.formats[0]
    (min_w, min_h), (max_w, max_h) = queue.min_size, queue.max_size
    width = amphion.clamp(asked.width, min_w, max_w)
    height = amphion.clamp(asked.height, min_h, max_h)
    if not spec.compressed:
        width, height = width & ~1, height & ~1    # 4:2:0 needs even sizes
    planes = []
    for index, minimum in enumerate(plane_layout(spec, width, height)):
        wanted = asked.planes[index].sizeimage if index < len(asked.planes) else 0
        sizeimage = max(wanted, minimum.sizeimage)
        if spec.compressed:
            sizeimage = min(sizeimage, amphion.SZ_8M)
        planes.append(PlaneFormat(sizeimage, minimum.bytesperline))
    return replace(sanitize_colorimetry(asked), width=width, height=height, pixelformat=spec.fourcc,
                   field=uapi.V4L2_FIELD_NONE, planes=tuple(planes),
                   flags=uapi.V4L2_FMT_FLAG_DYN_RESOLUTION if spec.dyn_resolution and kind is CoreKind.DECODER else 0)


def default_format(kind: CoreKind, buf_type: int) -> PixFormat:
    """At open: the decoder knows no colorimetry yet, the encoder starts at Rec. 709 (venc_init())."""
    queue = queue_formats(kind, buf_type)
    width, height = amphion.DEC_DEFAULT_SIZE if kind is CoreKind.DECODER else amphion.ENC_DEFAULT_SIZE
    fmt = PixFormat(width, height, queue.formats[0].fourcc)
    if kind is CoreKind.ENCODER:
        fmt = replace(fmt, colorspace=uapi.V4L2_COLORSPACE_REC709, ycbcr_enc=uapi.V4L2_YCBCR_ENC_709,
                      quantization=uapi.V4L2_QUANTIZATION_LIM_RANGE, xfer_func=uapi.V4L2_XFER_FUNC_709)
    return try_format(kind, buf_type, fmt)
