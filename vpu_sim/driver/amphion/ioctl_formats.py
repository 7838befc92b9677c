"""The format-side ioctls of a VPU node: QUERYCAP, formats, selections and crops, frame sizes,
frame rate, and the codec commands (``vdec_ioctl_ops``/``venc_ioctl_ops`` of Linux 6.1 behind
``v4l2-ioctl.c``'s argument handling)."""
from __future__ import annotations

import errno
import platform
import re

from memtrackfs.errors import KernelError
from vpu_sim import uapi
from vpu_sim.driver.amphion import model as amphion
from vpu_sim.driver.amphion.formats import (
    PixFormat,
    PlaneFormat,
    fmtdesc_flags,
)
from vpu_sim.driver.amphion.ioctls import Call, load

DEVICE_CAPS = uapi.V4L2_CAP_VIDEO_M2M_MPLANE | uapi.V4L2_CAP_STREAMING | uapi.V4L2_CAP_EXT_PIX_FORMAT
# v4l_querycap(): the core adds EXT_PIX_FORMAT to both, and DEVICE_CAPS to the capabilities.
CAPABILITIES = DEVICE_CAPS | uapi.V4L2_CAP_DEVICE_CAPS
_SINGLE_PLANAR = {uapi.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE: uapi.V4L2_BUF_TYPE_VIDEO_CAPTURE,
                  uapi.V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE: uapi.V4L2_BUF_TYPE_VIDEO_OUTPUT}


def kernel_version(release: str = platform.release()) -> int:
    """LINUX_VERSION_CODE of a release string such as '6.1.0-18-arm64' (QUERYCAP's version)."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if match is None:
        return 0
    major, minor, patch = (int(part or 0) for part in match.groups())
    return (major << 16) | (minor << 8) | min(patch, 255)


def querycap(call: Call) -> bytes:
    return bytes(uapi.v4l2_capability(driver=amphion.DRIVER_NAME.encode(),
                                      card=amphion.CARD_NAMES[call.file.kind].encode(),
                                      bus_info=amphion.BUS_INFO.encode(), version=kernel_version(),
                                      capabilities=CAPABILITIES, device_caps=DEVICE_CAPS))


# -- formats -----------------------------------------------------------------------------------

def _pix_format(raw: uapi.v4l2_pix_format_mplane) -> PixFormat:
    planes = min(raw.num_planes, uapi.VIDEO_MAX_PLANES)
    return PixFormat(raw.width, raw.height, raw.pixelformat, raw.field, raw.colorspace,
                     tuple(PlaneFormat(p.sizeimage, p.bytesperline) for p in raw.plane_fmt[:planes]),
                     raw.flags, raw.ycbcr_enc, raw.quantization, raw.xfer_func)


def format_argument(f: uapi.v4l2_format) -> PixFormat:
    return _pix_format(f.fmt.pix_mp)


def store_format(buf_type: int, fmt: PixFormat) -> bytes:
    """A v4l2_format holding ``fmt``: everything else zero, as the core clears it."""
    f = uapi.v4l2_format(type=buf_type)
    raw = f.fmt.pix_mp
    raw.width, raw.height, raw.pixelformat, raw.field = fmt.width, fmt.height, fmt.pixelformat, fmt.field
    raw.colorspace, raw.num_planes, raw.flags = fmt.colorspace, len(fmt.planes), fmt.flags
    raw.ycbcr_enc, raw.quantization, raw.xfer_func = fmt.ycbcr_enc, fmt.quantization, fmt.xfer_func
    for index, plane in enumerate(fmt.planes):
        raw.plane_fmt[index].sizeimage = plane.sizeimage
        raw.plane_fmt[index].bytesperline = plane.bytesperline
    return bytes(f)


def enum_fmt(call: Call) -> bytes:
    d = load(uapi.v4l2_fmtdesc, call.arg)
    spec = call.instance.enum_format(d.type, d.index)
    # v4l_enum_fmt(): everything after ``type`` is cleared, then filled.
    return bytes(uapi.v4l2_fmtdesc(index=d.index, type=d.type, flags=fmtdesc_flags(spec),
                                   description=spec.description.encode(), pixelformat=spec.fourcc))


def g_fmt(call: Call) -> bytes:
    f = load(uapi.v4l2_format, call.arg)
    return store_format(f.type, call.instance.get_format(f.type))


def s_fmt(call: Call) -> bytes:
    f = load(uapi.v4l2_format, call.arg)
    return store_format(f.type, call.instance.set_format(f.type, format_argument(f)))


def try_fmt(call: Call) -> bytes:
    f = load(uapi.v4l2_format, call.arg)
    return store_format(f.type, call.instance.try_format(f.type, format_argument(f)))


# -- selection and crop --------------------------------------------------------------------------

def _single_planar(buf_type: int) -> int:
    """v4l_g_selection(): the driver sees the single-planar type."""
    return _SINGLE_PLANAR.get(buf_type, buf_type)


def g_selection(call: Call) -> bytes:
    s = load(uapi.v4l2_selection, call.arg)
    s.r.left, s.r.top, s.r.width, s.r.height = call.instance.selection(_single_planar(s.type), s.target)
    return bytes(s)


def s_selection(call: Call) -> bytes:
    s = load(uapi.v4l2_selection, call.arg)
    rect = (s.r.left, s.r.top, s.r.width, s.r.height)
    s.r.left, s.r.top, s.r.width, s.r.height = call.instance.set_selection(_single_planar(s.type), s.target, rect)
    return bytes(s)


def _crop_targets(buf_type: int) -> tuple[int, int, int]:
    """v4l_cropcap()/v4l_g_crop(): an OUTPUT queue's crop is its compose rectangle."""
    if buf_type in (uapi.V4L2_BUF_TYPE_VIDEO_OUTPUT, uapi.V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE):
        return uapi.V4L2_SEL_TGT_COMPOSE, uapi.V4L2_SEL_TGT_COMPOSE_BOUNDS, uapi.V4L2_SEL_TGT_COMPOSE_DEFAULT
    return uapi.V4L2_SEL_TGT_CROP, uapi.V4L2_SEL_TGT_CROP_BOUNDS, uapi.V4L2_SEL_TGT_CROP_DEFAULT


def cropcap(call: Call) -> bytes:
    c = load(uapi.v4l2_cropcap, call.arg)
    _, bounds_target, default_target = _crop_targets(c.type)
    buf_type = _single_planar(c.type)
    bounds = call.instance.selection(buf_type, bounds_target)
    default = call.instance.selection(buf_type, default_target)
    c.bounds.left, c.bounds.top, c.bounds.width, c.bounds.height = bounds
    c.defrect.left, c.defrect.top, c.defrect.width, c.defrect.height = default
    c.pixelaspect.numerator = c.pixelaspect.denominator = 1
    return bytes(c)


def g_crop(call: Call) -> bytes:
    c = load(uapi.v4l2_crop, call.arg)
    c.c.left, c.c.top, c.c.width, c.c.height = call.instance.selection(_single_planar(c.type),
                                                                       _crop_targets(c.type)[0])
    return bytes(c)


def s_crop(call: Call) -> bytes:
    c = load(uapi.v4l2_crop, call.arg)
    call.instance.set_selection(_single_planar(c.type), _crop_targets(c.type)[0],
                                (c.c.left, c.c.top, c.c.width, c.c.height))
    return b""


# -- frame sizes and frame rate (encoder) ---------------------------------------------------------

def enum_framesizes(call: Call) -> bytes:
    f = load(uapi.v4l2_frmsizeenum, call.arg)
    (min_w, min_h), (max_w, max_h), step = call.instance.frame_size_range(f.pixel_format)
    if f.index:
        raise KernelError(errno.EINVAL, "a stepwise frame size range has index 0 only")
    f.type = uapi.V4L2_FRMSIZE_TYPE_STEPWISE
    f.stepwise = uapi.v4l2_frmsize_stepwise(min_w, max_w, step, min_h, max_h, step)
    return bytes(f)


def _streamparm(call: Call) -> uapi.v4l2_streamparm:
    p = load(uapi.v4l2_streamparm, call.arg)
    if p.type not in (uapi.V4L2_BUF_TYPE_VIDEO_OUTPUT, uapi.V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE):
        raise KernelError(errno.EINVAL, "the encoder's frame rate is set on its OUTPUT queue")
    return p


def _fill_parm(p: uapi.v4l2_streamparm, time_per_frame: tuple[int, int]) -> bytes:
    out = uapi.v4l2_streamparm(type=p.type)
    out.parm.output.capability = uapi.V4L2_CAP_TIMEPERFRAME
    out.parm.output.timeperframe.numerator, out.parm.output.timeperframe.denominator = time_per_frame
    return bytes(out)


def g_parm(call: Call) -> bytes:
    return _fill_parm(_streamparm(call), call.instance.time_per_frame)


def s_parm(call: Call) -> bytes:
    p = _streamparm(call)
    fract = p.parm.output.timeperframe
    return _fill_parm(p, call.instance.set_time_per_frame(fract.numerator, fract.denominator))


# -- codec commands ------------------------------------------------------------------------------

def decoder_cmd(call: Call, *, try_only: bool) -> bytes:
    d = load(uapi.v4l2_decoder_cmd, call.arg)
    call.instance.command(d.cmd, try_only=try_only)
    # v4l2_m2m_ioctl_try_decoder_cmd() clears what the stateful decoder does not support.
    d.flags = 0
    if d.cmd == uapi.V4L2_DEC_CMD_STOP:
        d.stop.pts = 0
    else:
        d.start.speed = 0
        d.start.format = uapi.V4L2_DEC_START_FMT_NONE
    return bytes(d)


def encoder_cmd(call: Call, *, try_only: bool) -> bytes:
    e = load(uapi.v4l2_encoder_cmd, call.arg)
    call.instance.command(e.cmd, try_only=try_only)
    e.flags = 0
    return bytes(e)
