"""The slice of ``linux/videodev2.h``, ``linux/v4l2-common.h`` and ``linux/v4l2-controls.h`` the
simulated VPU speaks.

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
V4L2_PIX_FMT_H264_MVC = v4l2_fourcc("M264")
V4L2_PIX_FMT_XVID = v4l2_fourcc("XVID")
V4L2_PIX_FMT_VC1_ANNEX_G = v4l2_fourcc("VC1G")
V4L2_PIX_FMT_VC1_ANNEX_L = v4l2_fourcc("VC1L")
V4L2_PIX_FMT_NV12 = v4l2_fourcc("NV12")
V4L2_PIX_FMT_YUV420 = v4l2_fourcc("YU12")

# -- enum v4l2_buf_type, v4l2_memory, v4l2_field -------------------------------------------------
V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
V4L2_BUF_TYPE_VIDEO_OUTPUT = 2
V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE = 9
V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE = 10

V4L2_MEMORY_MMAP = 1
V4L2_MEMORY_USERPTR = 2
V4L2_MEMORY_DMABUF = 4

V4L2_FIELD_ANY = 0
V4L2_FIELD_NONE = 1
V4L2_FIELD_SEQ_TB = 5

# enum v4l2_colorspace, v4l2_ycbcr_encoding, v4l2_quantization, v4l2_xfer_func
V4L2_COLORSPACE_DEFAULT = 0
V4L2_COLORSPACE_SMPTE170M = 1
V4L2_COLORSPACE_SMPTE240M = 2
V4L2_COLORSPACE_REC709 = 3
V4L2_COLORSPACE_470_SYSTEM_M = 5
V4L2_COLORSPACE_470_SYSTEM_BG = 6
V4L2_COLORSPACE_JPEG = 7
V4L2_COLORSPACE_SRGB = 8
V4L2_COLORSPACE_OPRGB = 9
V4L2_COLORSPACE_BT2020 = 10
V4L2_COLORSPACE_RAW = 11
V4L2_COLORSPACE_DCI_P3 = 12
V4L2_YCBCR_ENC_601 = 1
V4L2_YCBCR_ENC_709 = 2
V4L2_YCBCR_ENC_BT2020 = 6
V4L2_YCBCR_ENC_BT2020_CONST_LUM = 7
V4L2_YCBCR_ENC_SMPTE240M = 8
V4L2_YCBCR_ENC_LAST = 10
V4L2_QUANTIZATION_FULL_RANGE = 1
V4L2_QUANTIZATION_LIM_RANGE = 2
V4L2_XFER_FUNC_709 = 1
V4L2_XFER_FUNC_SRGB = 2
V4L2_XFER_FUNC_SMPTE240M = 4
V4L2_XFER_FUNC_NONE = 5
V4L2_XFER_FUNC_SMPTE2084 = 7
V4L2_XFER_FUNC_LAST = 8

# enum v4l2_priority
V4L2_PRIORITY_UNSET = 0
V4L2_PRIORITY_BACKGROUND = 1
V4L2_PRIORITY_INTERACTIVE = 2
V4L2_PRIORITY_RECORD = 3
V4L2_PRIORITY_DEFAULT = V4L2_PRIORITY_INTERACTIVE

# -- capabilities and flags ----------------------------------------------------------------------
V4L2_CAP_VIDEO_M2M_MPLANE = 0x00004000
V4L2_CAP_EXT_PIX_FORMAT = 0x00200000
V4L2_CAP_TIMEPERFRAME = 0x1000
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
V4L2_BUF_FLAG_BFRAME = 0x00000020
V4L2_BUF_FLAG_ERROR = 0x00000040
V4L2_BUF_FLAG_TIMECODE = 0x00000100
V4L2_BUF_FLAG_PREPARED = 0x00000400
V4L2_BUF_FLAG_NO_CACHE_INVALIDATE = 0x00000800
V4L2_BUF_FLAG_NO_CACHE_CLEAN = 0x00001000
V4L2_BUF_FLAG_TIMESTAMP_MASK = 0x0000E000
V4L2_BUF_FLAG_TIMESTAMP_COPY = 0x00004000
V4L2_BUF_FLAG_TSTAMP_SRC_MASK = 0x00070000
V4L2_BUF_FLAG_LAST = 0x00100000
V4L2_BUF_FLAG_REQUEST_FD = 0x00800000
V4L2_MEMORY_FLAG_NON_COHERENT = 1 << 0

V4L2_DEC_CMD_START = 0
V4L2_DEC_CMD_STOP = 1
V4L2_DEC_START_FMT_NONE = 0
V4L2_DEC_CMD_PAUSE = 2
V4L2_DEC_CMD_RESUME = 3
V4L2_ENC_CMD_START = 0
V4L2_ENC_CMD_STOP = 1
V4L2_ENC_CMD_PAUSE = 2
V4L2_ENC_CMD_RESUME = 3

# -- events ---------------------------------------------------------------------------------------
V4L2_EVENT_ALL = 0
V4L2_EVENT_EOS = 2
V4L2_EVENT_CTRL = 3
V4L2_EVENT_SOURCE_CHANGE = 5
V4L2_EVENT_CTRL_CH_VALUE = 1 << 0
V4L2_EVENT_CTRL_CH_FLAGS = 1 << 1
V4L2_EVENT_CTRL_CH_RANGE = 1 << 2
V4L2_EVENT_SRC_CH_RESOLUTION = 1 << 0
V4L2_EVENT_SUB_FL_SEND_INITIAL = 1 << 0
V4L2_EVENT_SUB_FL_ALLOW_FEEDBACK = 1 << 1

# -- selection targets, frame sizes -------------------------------------------------------------
V4L2_SEL_TGT_CROP = 0x0000
V4L2_SEL_TGT_CROP_DEFAULT = 0x0001
V4L2_SEL_TGT_CROP_BOUNDS = 0x0002
V4L2_SEL_TGT_COMPOSE = 0x0100
V4L2_SEL_TGT_COMPOSE_DEFAULT = 0x0101
V4L2_SEL_TGT_COMPOSE_BOUNDS = 0x0102
V4L2_SEL_TGT_COMPOSE_PADDED = 0x0103
V4L2_FRMSIZE_TYPE_STEPWISE = 3

# -- controls ------------------------------------------------------------------------------------
V4L2_CTRL_CLASS_USER = 0x00980000
V4L2_CTRL_CLASS_CODEC = 0x00990000
V4L2_CID_BASE = V4L2_CTRL_CLASS_USER | 0x900
V4L2_CID_CODEC_BASE = V4L2_CTRL_CLASS_CODEC | 0x900
V4L2_CID_USER_CLASS = V4L2_CTRL_CLASS_USER | 1
V4L2_CID_CODEC_CLASS = V4L2_CTRL_CLASS_CODEC | 1
V4L2_CID_MIN_BUFFERS_FOR_CAPTURE = V4L2_CID_BASE + 39
V4L2_CID_MIN_BUFFERS_FOR_OUTPUT = V4L2_CID_BASE + 40
V4L2_CID_MPEG_VIDEO_B_FRAMES = V4L2_CID_CODEC_BASE + 202
V4L2_CID_MPEG_VIDEO_GOP_SIZE = V4L2_CID_CODEC_BASE + 203
V4L2_CID_MPEG_VIDEO_BITRATE_MODE = V4L2_CID_CODEC_BASE + 206
V4L2_CID_MPEG_VIDEO_BITRATE = V4L2_CID_CODEC_BASE + 207
V4L2_CID_MPEG_VIDEO_BITRATE_PEAK = V4L2_CID_CODEC_BASE + 208
V4L2_CID_MPEG_VIDEO_FRAME_RC_ENABLE = V4L2_CID_CODEC_BASE + 215
V4L2_CID_MPEG_VIDEO_HEADER_MODE = V4L2_CID_CODEC_BASE + 216
V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME = V4L2_CID_CODEC_BASE + 229
V4L2_CID_MPEG_VIDEO_H264_I_FRAME_QP = V4L2_CID_CODEC_BASE + 350
V4L2_CID_MPEG_VIDEO_H264_P_FRAME_QP = V4L2_CID_CODEC_BASE + 351
V4L2_CID_MPEG_VIDEO_H264_B_FRAME_QP = V4L2_CID_CODEC_BASE + 352
V4L2_CID_MPEG_VIDEO_H264_LEVEL = V4L2_CID_CODEC_BASE + 359
V4L2_CID_MPEG_VIDEO_H264_PROFILE = V4L2_CID_CODEC_BASE + 363
V4L2_CID_MPEG_VIDEO_H264_VUI_EXT_SAR_HEIGHT = V4L2_CID_CODEC_BASE + 364
V4L2_CID_MPEG_VIDEO_H264_VUI_EXT_SAR_WIDTH = V4L2_CID_CODEC_BASE + 365
V4L2_CID_MPEG_VIDEO_H264_VUI_SAR_ENABLE = V4L2_CID_CODEC_BASE + 366
V4L2_CID_MPEG_VIDEO_H264_VUI_SAR_IDC = V4L2_CID_CODEC_BASE + 367
V4L2_CID_MPEG_VIDEO_DEC_DISPLAY_DELAY = V4L2_CID_CODEC_BASE + 653
V4L2_CID_MPEG_VIDEO_DEC_DISPLAY_DELAY_ENABLE = V4L2_CID_CODEC_BASE + 654
# The RFC's control: BASE + 44, which moves V4L2_CID_LASTP1 to BASE + 45.
V4L2_CID_MEMORY_USAGE = V4L2_CID_BASE + 44
V4L2_CID_LASTP1 = V4L2_CID_BASE + 45
V4L2_CID_MPEG_VIDEO_H264_CPB_SIZE = V4L2_CID_CODEC_BASE + 356

V4L2_CTRL_ID_MASK = 0x0FFFFFFF
V4L2_CTRL_WHICH_CUR_VAL = 0
V4L2_CTRL_WHICH_DEF_VAL = 0x0F000000
V4L2_CTRL_WHICH_REQUEST_VAL = 0x0F010000

V4L2_CTRL_TYPE_INTEGER = 1
V4L2_CTRL_TYPE_BOOLEAN = 2
V4L2_CTRL_TYPE_MENU = 3
V4L2_CTRL_TYPE_BUTTON = 4
V4L2_CTRL_TYPE_INTEGER64 = 5
V4L2_CTRL_TYPE_CTRL_CLASS = 6

V4L2_CTRL_FLAG_READ_ONLY = 0x0004
V4L2_CTRL_FLAG_UPDATE = 0x0008
V4L2_CTRL_FLAG_WRITE_ONLY = 0x0040
V4L2_CTRL_FLAG_VOLATILE = 0x0080
V4L2_CTRL_FLAG_EXECUTE_ON_WRITE = 0x0200
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


class v4l2_querymenu(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("id", c_uint32), ("index", c_uint32), ("name", c_char * 32), ("reserved", c_uint32)]


class v4l2_event_subscription(ctypes.Structure):
    _fields_ = [("type", c_uint32), ("id", c_uint32), ("flags", c_uint32), ("reserved", c_uint32 * 5)]


class v4l2_event_ctrl(ctypes.Structure):
    _fields_ = [("changes", c_uint32), ("type", c_uint32), ("value64", c_int64), ("flags", c_uint32),
                ("minimum", c_int32), ("maximum", c_int32), ("step", c_int32), ("default_value", c_int32)]


class _v4l2_event_u(ctypes.Union):
    # src_change is one __u32 ``changes``: data[0:4]
    _fields_ = [("ctrl", v4l2_event_ctrl), ("data", c_uint8 * 64)]


class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", c_int64), ("tv_nsec", c_int64)]


class v4l2_event(ctypes.Structure):
    _fields_ = [("type", c_uint32), ("u", _v4l2_event_u), ("pending", c_uint32), ("sequence", c_uint32),
                ("timestamp", timespec), ("id", c_uint32), ("reserved", c_uint32 * 8)]


class v4l2_rect(ctypes.Structure):
    _fields_ = [("left", c_int32), ("top", c_int32), ("width", c_uint32), ("height", c_uint32)]


class v4l2_fract(ctypes.Structure):
    _fields_ = [("numerator", c_uint32), ("denominator", c_uint32)]


class v4l2_selection(ctypes.Structure):
    _fields_ = [("type", c_uint32), ("target", c_uint32), ("flags", c_uint32), ("r", v4l2_rect),
                ("reserved", c_uint32 * 9)]


class v4l2_cropcap(ctypes.Structure):
    _fields_ = [("type", c_uint32), ("bounds", v4l2_rect), ("defrect", v4l2_rect), ("pixelaspect", v4l2_fract)]


class v4l2_crop(ctypes.Structure):
    _fields_ = [("type", c_uint32), ("c", v4l2_rect)]


class v4l2_outputparm(ctypes.Structure):
    # v4l2_captureparm has the same layout (capturemode, readbuffers in these places)
    _fields_ = [("capability", c_uint32), ("outputmode", c_uint32), ("timeperframe", v4l2_fract),
                ("extendedmode", c_uint32), ("writebuffers", c_uint32), ("reserved", c_uint32 * 4)]


class _v4l2_streamparm_parm(ctypes.Union):
    _fields_ = [("output", v4l2_outputparm), ("raw_data", c_uint8 * 200)]


class v4l2_streamparm(ctypes.Structure):
    _fields_ = [("type", c_uint32), ("parm", _v4l2_streamparm_parm)]


class v4l2_frmsize_stepwise(ctypes.Structure):
    _fields_ = [("min_width", c_uint32), ("max_width", c_uint32), ("step_width", c_uint32),
                ("min_height", c_uint32), ("max_height", c_uint32), ("step_height", c_uint32)]


class v4l2_frmsizeenum(ctypes.Structure):
    _fields_ = [("index", c_uint32), ("pixel_format", c_uint32), ("type", c_uint32),
                ("stepwise", v4l2_frmsize_stepwise), ("reserved", c_uint32 * 2)]


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
VIDIOC_G_PARM = _iowr(21, v4l2_streamparm)
VIDIOC_S_PARM = _iowr(22, v4l2_streamparm)
VIDIOC_QUERYMENU = _iowr(37, v4l2_querymenu)
VIDIOC_CROPCAP = _iowr(58, v4l2_cropcap)
VIDIOC_G_CROP = _iowr(59, v4l2_crop)
VIDIOC_S_CROP = _iow(60, v4l2_crop)
VIDIOC_G_PRIORITY = _ior(67, c_uint32)
VIDIOC_S_PRIORITY = _iow(68, c_uint32)
VIDIOC_ENUM_FRAMESIZES = _iowr(74, v4l2_frmsizeenum)
VIDIOC_DQEVENT = _ior(89, v4l2_event)
VIDIOC_SUBSCRIBE_EVENT = _iow(90, v4l2_event_subscription)
VIDIOC_UNSUBSCRIBE_EVENT = _iow(91, v4l2_event_subscription)
VIDIOC_PREPARE_BUF = _iowr(93, v4l2_buffer)
VIDIOC_G_SELECTION = _iowr(94, v4l2_selection)
VIDIOC_S_SELECTION = _iowr(95, v4l2_selection)
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
