"""The slice of ``linux/videodev2.h`` and ``linux/v4l2-controls.h`` the simulated VPU speaks.

Layouts are the 64-bit ones (x86-64 and arm64 agree): ``unsigned long`` and pointers are 8 bytes
and 8-byte aligned. Structures the header declares ``__attribute__((packed))`` set ``_pack_ = 1``.
``tests/test_vpu_uapi.py`` compiles the real header with gcc and compares every size, the key
offsets and the ioctl numbers, so a mistake here fails a test rather than a client.
"""
from __future__ import annotations

import ctypes
from ctypes import (
    c_char,
    c_int32,
    c_int64,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
    c_ulong,
    c_void_p,
)

VIDEO_MAX_FRAME = 32
VIDEO_MAX_PLANES = 8
V4L2_CTRL_MAX_DIMS = 4
V4L2_CID_MAX_CTRLS = 1024


def v4l2_fourcc(code: str) -> int:
    """``v4l2_fourcc('N','M','1','2')``: four ASCII characters, little-endian."""
    a, b, c, d = code.encode("ascii")
    return a | (b << 8) | (c << 16) | (d << 24)


def v4l2_fourcc_be(code: str) -> int:
    """``v4l2_fourcc_be``: the big-endian variant sets bit 31."""
    return v4l2_fourcc(code) | (1 << 31)


# -- pixel formats -------------------------------------------------------------------------------
V4L2_PIX_FMT_NV12M = v4l2_fourcc("NM12")
V4L2_PIX_FMT_NV12M_8L128 = v4l2_fourcc("NA12")
V4L2_PIX_FMT_NV12M_10BE_8L128 = v4l2_fourcc_be("NT12")
V4L2_PIX_FMT_H264 = v4l2_fourcc("H264")
V4L2_PIX_FMT_HEVC = v4l2_fourcc("HEVC")
V4L2_PIX_FMT_VP8 = v4l2_fourcc("VP80")
V4L2_PIX_FMT_MPEG2 = v4l2_fourcc("MPG2")
V4L2_PIX_FMT_MPEG4 = v4l2_fourcc("MPG4")
V4L2_PIX_FMT_H263 = v4l2_fourcc("H263")

# -- enum v4l2_buf_type, v4l2_memory, v4l2_field -------------------------------------------------
V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
V4L2_BUF_TYPE_VIDEO_OUTPUT = 2
V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE = 9
V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE = 10

V4L2_MEMORY_MMAP = 1
V4L2_MEMORY_USERPTR = 2
V4L2_MEMORY_DMABUF = 4

V4L2_FIELD_NONE = 1

# -- capabilities and flags ----------------------------------------------------------------------
V4L2_CAP_VIDEO_M2M_MPLANE = 0x00004000
V4L2_CAP_STREAMING = 0x04000000
V4L2_CAP_DEVICE_CAPS = 0x80000000

V4L2_FMT_FLAG_COMPRESSED = 0x0001
V4L2_FMT_FLAG_DYN_RESOLUTION = 0x0008

V4L2_BUF_CAP_SUPPORTS_MMAP = 1 << 0
V4L2_BUF_CAP_SUPPORTS_DMABUF = 1 << 2
V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS = 1 << 4

V4L2_BUF_FLAG_QUEUED = 0x00000002
V4L2_BUF_FLAG_DONE = 0x00000004
V4L2_BUF_FLAG_KEYFRAME = 0x00000008
V4L2_BUF_FLAG_PFRAME = 0x00000010
V4L2_BUF_FLAG_TIMESTAMP_COPY = 0x00004000
V4L2_BUF_FLAG_LAST = 0x00100000

V4L2_DEC_CMD_START = 0
V4L2_DEC_CMD_STOP = 1
V4L2_DEC_START_FMT_NONE = 0
V4L2_ENC_CMD_START = 0
V4L2_ENC_CMD_STOP = 1

# -- controls ------------------------------------------------------------------------------------
V4L2_CTRL_CLASS_USER = 0x00980000
V4L2_CTRL_CLASS_CODEC = 0x00990000
V4L2_CID_BASE = V4L2_CTRL_CLASS_USER | 0x900
V4L2_CID_CODEC_BASE = V4L2_CTRL_CLASS_CODEC | 0x900
V4L2_CID_MIN_BUFFERS_FOR_CAPTURE = V4L2_CID_BASE + 39
V4L2_CID_MIN_BUFFERS_FOR_OUTPUT = V4L2_CID_BASE + 40
# The RFC's control: BASE + 44, which moves V4L2_CID_LASTP1 to BASE + 45.
V4L2_CID_MEMORY_USAGE = V4L2_CID_BASE + 44
V4L2_CID_LASTP1 = V4L2_CID_BASE + 45
V4L2_CID_MPEG_VIDEO_H264_CPB_SIZE = V4L2_CID_CODEC_BASE + 356

V4L2_CTRL_ID_MASK = 0x0FFFFFFF
V4L2_CTRL_WHICH_CUR_VAL = 0
V4L2_CTRL_WHICH_DEF_VAL = 0x0F000000
V4L2_CTRL_WHICH_REQUEST_VAL = 0x0F010000

V4L2_CTRL_TYPE_INTEGER = 1
V4L2_CTRL_TYPE_INTEGER64 = 5

V4L2_CTRL_FLAG_READ_ONLY = 0x0004
V4L2_CTRL_FLAG_VOLATILE = 0x0080
V4L2_CTRL_FLAG_NEXT_CTRL = 0x80000000
V4L2_CTRL_FLAG_NEXT_COMPOUND = 0x40000000


def ctrl_id2which(ctrl_id: int) -> int:
    """``V4L2_CTRL_ID2WHICH``: the class bits of a control id."""
    return ctrl_id & 0x0FFF0000


# -- structures ----------------------------------------------------------------------------------
class v4l2_capability(ctypes.Structure):
    _fields_ = [("driver", c_char * 16), ("card", c_char * 32), ("bus_info", c_char * 32),
                ("version", c_uint32), ("capabilities", c_uint32), ("device_caps", c_uint32),
                ("reserved", c_uint32 * 3)]


class v4l2_fmtdesc(ctypes.Structure):
    _fields_ = [("index", c_uint32), ("type", c_uint32), ("flags", c_uint32),
                ("description", c_char * 32), ("pixelformat", c_uint32), ("mbus_code", c_uint32),
                ("reserved", c_uint32 * 3)]


class v4l2_plane_pix_format(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("sizeimage", c_uint32), ("bytesperline", c_uint32), ("reserved", c_uint16 * 6)]


class v4l2_pix_format_mplane(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("width", c_uint32), ("height", c_uint32), ("pixelformat", c_uint32),
                ("field", c_uint32), ("colorspace", c_uint32),
                ("plane_fmt", v4l2_plane_pix_format * VIDEO_MAX_PLANES),
                ("num_planes", c_uint8), ("flags", c_uint8),
                ("ycbcr_enc", c_uint8),  # a union with hsv_enc in the header: same byte
                ("quantization", c_uint8), ("xfer_func", c_uint8), ("reserved", c_uint8 * 7)]


class _v4l2_format_fmt(ctypes.Union):
    # The header's union also holds struct v4l2_window, whose pointers make it 8-byte aligned;
    # _align stands in for it so ``fmt`` lands at offset 8 as in C.
    _fields_ = [("pix_mp", v4l2_pix_format_mplane), ("raw_data", c_uint8 * 200), ("_align", c_void_p)]


class v4l2_format(ctypes.Structure):
    _fields_ = [("type", c_uint32), ("fmt", _v4l2_format_fmt)]


class v4l2_requestbuffers(ctypes.Structure):
    _fields_ = [("count", c_uint32), ("type", c_uint32), ("memory", c_uint32),
                ("capabilities", c_uint32), ("flags", c_uint8), ("reserved", c_uint8 * 3)]


class timeval(ctypes.Structure):
    _fields_ = [("tv_sec", c_int64), ("tv_usec", c_int64)]


class v4l2_timecode(ctypes.Structure):
    _fields_ = [("type", c_uint32), ("flags", c_uint32), ("frames", c_uint8), ("seconds", c_uint8),
                ("minutes", c_uint8), ("hours", c_uint8), ("userbits", c_uint8 * 4)]


class _v4l2_plane_m(ctypes.Union):
    _fields_ = [("mem_offset", c_uint32), ("userptr", c_ulong), ("fd", c_int32)]


class v4l2_plane(ctypes.Structure):
    _fields_ = [("bytesused", c_uint32), ("length", c_uint32), ("m", _v4l2_plane_m),
                ("data_offset", c_uint32), ("reserved", c_uint32 * 11)]


class _v4l2_buffer_m(ctypes.Union):
    # ``planes`` is a user-space address: the driver reads and writes the array through
    # copy_from_user/copy_to_user, never through this process's memory.
    _fields_ = [("offset", c_uint32), ("userptr", c_ulong), ("planes", c_uint64), ("fd", c_int32)]


class v4l2_buffer(ctypes.Structure):
    _fields_ = [("index", c_uint32), ("type", c_uint32), ("bytesused", c_uint32), ("flags", c_uint32),
                ("field", c_uint32), ("timestamp", timeval), ("timecode", v4l2_timecode),
                ("sequence", c_uint32), ("memory", c_uint32), ("m", _v4l2_buffer_m),
                ("length", c_uint32), ("reserved2", c_uint32),
                ("request_fd", c_int32)]  # a union with ``reserved`` in the header: same word


class v4l2_create_buffers(ctypes.Structure):
    _fields_ = [("index", c_uint32), ("count", c_uint32), ("memory", c_uint32), ("format", v4l2_format),
                ("capabilities", c_uint32), ("flags", c_uint32), ("reserved", c_uint32 * 6)]


class v4l2_queryctrl(ctypes.Structure):
    _fields_ = [("id", c_uint32), ("type", c_uint32), ("name", c_char * 32), ("minimum", c_int32),
                ("maximum", c_int32), ("step", c_int32), ("default_value", c_int32), ("flags", c_uint32),
                ("reserved", c_uint32 * 2)]


class v4l2_query_ext_ctrl(ctypes.Structure):
    _fields_ = [("id", c_uint32), ("type", c_uint32), ("name", c_char * 32), ("minimum", c_int64),
                ("maximum", c_int64), ("step", c_uint64), ("default_value", c_int64), ("flags", c_uint32),
                ("elem_size", c_uint32), ("elems", c_uint32), ("nr_of_dims", c_uint32),
                ("dims", c_uint32 * V4L2_CTRL_MAX_DIMS), ("reserved", c_uint32 * 32)]


class v4l2_control(ctypes.Structure):
    _fields_ = [("id", c_uint32), ("value", c_int32)]


class _v4l2_ext_control_value(ctypes.Union):
    _pack_ = 1
    # The header lists many pointer members (string, p_u8, ...); all share ``ptr``'s 8 bytes.
    _fields_ = [("value", c_int32), ("value64", c_int64), ("ptr", c_uint64)]


class v4l2_ext_control(ctypes.Structure):
    _pack_ = 1
    _anonymous_ = ("u",)
    _fields_ = [("id", c_uint32), ("size", c_uint32), ("reserved2", c_uint32 * 1),
                ("u", _v4l2_ext_control_value)]


class v4l2_ext_controls(ctypes.Structure):
    _fields_ = [("which", c_uint32),  # a union with ctrl_class in the header
                ("count", c_uint32), ("error_idx", c_uint32), ("request_fd", c_int32),
                ("reserved", c_uint32 * 1), ("controls", c_uint64)]


class _v4l2_decoder_cmd_stop(ctypes.Structure):
    _fields_ = [("pts", c_uint64)]


class _v4l2_decoder_cmd_start(ctypes.Structure):
    _fields_ = [("speed", c_int32), ("format", c_uint32)]


class _v4l2_decoder_cmd_u(ctypes.Union):
    _fields_ = [("stop", _v4l2_decoder_cmd_stop), ("start", _v4l2_decoder_cmd_start),
                ("raw", c_uint32 * 16)]


class v4l2_decoder_cmd(ctypes.Structure):
    _anonymous_ = ("u",)
    _fields_ = [("cmd", c_uint32), ("flags", c_uint32), ("u", _v4l2_decoder_cmd_u)]


class v4l2_encoder_cmd(ctypes.Structure):
    _fields_ = [("cmd", c_uint32), ("flags", c_uint32), ("raw", c_uint32 * 8)]


# -- ioctl numbers (asm-generic/ioctl.h, as used by x86-64 and arm64) ---------------------------
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("V") << 8) | nr


def _ior(nr: int, struct: type) -> int:
    return _ioc(_IOC_READ, nr, ctypes.sizeof(struct))


def _iow(nr: int, struct: type) -> int:
    return _ioc(_IOC_WRITE, nr, ctypes.sizeof(struct))


def _iowr(nr: int, struct: type) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, ctypes.sizeof(struct))


VIDIOC_QUERYCAP = _ior(0, v4l2_capability)
VIDIOC_ENUM_FMT = _iowr(2, v4l2_fmtdesc)
VIDIOC_G_FMT = _iowr(4, v4l2_format)
VIDIOC_S_FMT = _iowr(5, v4l2_format)
VIDIOC_REQBUFS = _iowr(8, v4l2_requestbuffers)
VIDIOC_QUERYBUF = _iowr(9, v4l2_buffer)
VIDIOC_QBUF = _iowr(15, v4l2_buffer)
VIDIOC_DQBUF = _iowr(17, v4l2_buffer)
VIDIOC_STREAMON = _iow(18, c_int32)
VIDIOC_STREAMOFF = _iow(19, c_int32)
VIDIOC_G_CTRL = _iowr(27, v4l2_control)
VIDIOC_S_CTRL = _iowr(28, v4l2_control)
VIDIOC_QUERYCTRL = _iowr(36, v4l2_queryctrl)
VIDIOC_TRY_FMT = _iowr(64, v4l2_format)
VIDIOC_G_EXT_CTRLS = _iowr(71, v4l2_ext_controls)
VIDIOC_S_EXT_CTRLS = _iowr(72, v4l2_ext_controls)
VIDIOC_TRY_EXT_CTRLS = _iowr(73, v4l2_ext_controls)
VIDIOC_ENCODER_CMD = _iowr(77, v4l2_encoder_cmd)
VIDIOC_TRY_ENCODER_CMD = _iowr(78, v4l2_encoder_cmd)
VIDIOC_CREATE_BUFS = _iowr(92, v4l2_create_buffers)
VIDIOC_DECODER_CMD = _iowr(96, v4l2_decoder_cmd)
VIDIOC_TRY_DECODER_CMD = _iowr(97, v4l2_decoder_cmd)
VIDIOC_QUERY_EXT_CTRL = _iowr(103, v4l2_query_ext_ctrl)
