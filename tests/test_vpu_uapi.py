"""vpu_sim.uapi against the kernel ABI: the known ioctl numbers, and the real header through gcc."""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

from vpu_sim import media_uapi, uapi

# Values quoted from the header's users (strace, v4l-utils), so they hold even without gcc.
KNOWN_IOCTLS = {
    "VIDIOC_QUERYCAP": 0x80685600,
    "VIDIOC_ENUM_FMT": 0xC0405602,
    "VIDIOC_G_FMT": 0xC0D05604,
    "VIDIOC_S_FMT": 0xC0D05605,
    "VIDIOC_REQBUFS": 0xC0145608,
    "VIDIOC_QUERYBUF": 0xC0585609,
    "VIDIOC_QBUF": 0xC058560F,
    "VIDIOC_DQBUF": 0xC0585611,
    "VIDIOC_STREAMON": 0x40045612,
    "VIDIOC_STREAMOFF": 0x40045613,
    "VIDIOC_G_CTRL": 0xC008561B,
    "VIDIOC_S_CTRL": 0xC008561C,
    "VIDIOC_QUERYCTRL": 0xC0445624,
    "VIDIOC_TRY_FMT": 0xC0D05640,
    "VIDIOC_G_EXT_CTRLS": 0xC0205647,
    "VIDIOC_S_EXT_CTRLS": 0xC0205648,
    "VIDIOC_TRY_EXT_CTRLS": 0xC0205649,
    "VIDIOC_ENCODER_CMD": 0xC028564D,
    "VIDIOC_CREATE_BUFS": 0xC100565C,
    "VIDIOC_DECODER_CMD": 0xC0485660,
    "VIDIOC_QUERY_EXT_CTRL": 0xC0E85667,
    "VIDIOC_DQEVENT": 0x80885659,
    "VIDIOC_SUBSCRIBE_EVENT": 0x4020565A,
    "VIDIOC_G_SELECTION": 0xC040565E,
    "VIDIOC_G_PARM": 0xC0CC5615,
    "VIDIOC_QUERYMENU": 0xC02C5625,
    "VIDIOC_G_PRIORITY": 0x80045643,
    "VIDIOC_ENUM_FRAMESIZES": 0xC02C564A,
    "VIDIOC_PREPARE_BUF": 0xC058565D,
    "VIDIOC_CROPCAP": 0xC02C563A,
    "VIDIOC_S_CROP": 0x4014563C,
    "MEDIA_IOC_DEVICE_INFO": 0xC1007C00,
    "MEDIA_IOC_ENUM_ENTITIES": 0xC1007C01,
    "MEDIA_IOC_ENUM_LINKS": 0xC0287C02,
    "MEDIA_IOC_G_TOPOLOGY": 0xC0487C04,
}

STRUCTS = ["v4l2_capability", "v4l2_fmtdesc", "v4l2_plane_pix_format", "v4l2_pix_format_mplane",
           "v4l2_format", "v4l2_requestbuffers", "v4l2_plane", "v4l2_buffer", "v4l2_create_buffers",
           "v4l2_queryctrl", "v4l2_query_ext_ctrl", "v4l2_control", "v4l2_ext_control",
           "v4l2_ext_controls", "v4l2_decoder_cmd", "v4l2_encoder_cmd", "v4l2_querymenu",
           "v4l2_event_subscription", "v4l2_event_ctrl", "v4l2_event", "v4l2_selection", "v4l2_cropcap",
           "v4l2_crop", "v4l2_streamparm", "v4l2_outputparm", "v4l2_frmsizeenum",
           "media_device_info", "media_entity_desc", "media_pad_desc", "media_link_desc", "media_links_enum",
           "media_v2_entity", "media_v2_interface", "media_v2_pad", "media_v2_link", "media_v2_topology"]

# Fields whose place a layout slip would move (after unions, pointers and packed members).
OFFSETS = [("v4l2_format", "fmt"), ("v4l2_pix_format_mplane", "plane_fmt"),
           ("v4l2_pix_format_mplane", "num_planes"), ("v4l2_pix_format_mplane", "quantization"),
           ("v4l2_buffer", "timestamp"), ("v4l2_buffer", "sequence"), ("v4l2_buffer", "m"),
           ("v4l2_buffer", "length"), ("v4l2_buffer", "request_fd"), ("v4l2_plane", "m"),
           ("v4l2_plane", "data_offset"), ("v4l2_create_buffers", "format"),
           ("v4l2_create_buffers", "capabilities"), ("v4l2_query_ext_ctrl", "minimum"),
           ("v4l2_query_ext_ctrl", "flags"), ("v4l2_query_ext_ctrl", "dims"),
           ("v4l2_ext_control", "value64"), ("v4l2_ext_controls", "error_idx"),
           ("v4l2_ext_controls", "controls"), ("v4l2_decoder_cmd", "stop"), ("v4l2_encoder_cmd", "raw"),
           ("v4l2_event", "u"), ("v4l2_event", "pending"), ("v4l2_event", "timestamp"), ("v4l2_event", "id"),
           ("v4l2_event_ctrl", "flags"), ("v4l2_selection", "r"), ("v4l2_frmsizeenum", "reserved"),
           ("v4l2_streamparm", "parm"), ("media_entity_desc", "dev"), ("media_links_enum", "links"),
           ("media_pad_desc", "flags"), ("media_v2_interface", "devnode"), ("media_v2_topology", "ptr_links")]

CONSTANTS = ["V4L2_PIX_FMT_H264", "V4L2_PIX_FMT_HEVC", "V4L2_PIX_FMT_VP8", "V4L2_PIX_FMT_MPEG2",
             "V4L2_PIX_FMT_MPEG4", "V4L2_PIX_FMT_H263", "V4L2_PIX_FMT_NV12M", "V4L2_PIX_FMT_NV12M_8L128",
             "V4L2_PIX_FMT_NV12M_10BE_8L128", "V4L2_CID_MIN_BUFFERS_FOR_CAPTURE",
             "V4L2_CID_MIN_BUFFERS_FOR_OUTPUT", "V4L2_CID_MPEG_VIDEO_H264_CPB_SIZE",
             "V4L2_CAP_VIDEO_M2M_MPLANE", "V4L2_CAP_STREAMING", "V4L2_CAP_DEVICE_CAPS",
             "V4L2_BUF_FLAG_LAST", "V4L2_BUF_FLAG_TIMESTAMP_COPY", "V4L2_CTRL_WHICH_DEF_VAL",
             "V4L2_CTRL_FLAG_NEXT_CTRL", "V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS", "V4L2_PIX_FMT_H264_MVC",
             "V4L2_PIX_FMT_XVID", "V4L2_PIX_FMT_VC1_ANNEX_G", "V4L2_PIX_FMT_VC1_ANNEX_L",
             "V4L2_CAP_EXT_PIX_FORMAT", "V4L2_CID_MPEG_VIDEO_H264_PROFILE", "V4L2_CID_MPEG_VIDEO_H264_LEVEL",
             "V4L2_CID_MPEG_VIDEO_H264_VUI_SAR_IDC", "V4L2_CID_MPEG_VIDEO_DEC_DISPLAY_DELAY_ENABLE",
             "V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME", "V4L2_CID_MPEG_VIDEO_HEADER_MODE",
             "V4L2_CID_MPEG_VIDEO_BITRATE_PEAK", "V4L2_CID_MPEG_VIDEO_H264_B_FRAME_QP",
             "V4L2_BUF_FLAG_TSTAMP_SRC_MASK", "V4L2_SEL_TGT_COMPOSE_PADDED", "V4L2_EVENT_SOURCE_CHANGE",
             "MEDIA_ENT_F_IO_V4L", "MEDIA_ENT_F_PROC_VIDEO_DECODER", "MEDIA_ENT_F_PROC_VIDEO_ENCODER",
             "MEDIA_INTF_T_V4L_VIDEO", "MEDIA_LNK_FL_INTERFACE_LINK"]


def _uapi(name: str):
    """A name from either module: videodev2.h's or media.h's."""
    return getattr(uapi, name) if hasattr(uapi, name) else getattr(media_uapi, name)


def test_known_ioctl_numbers() -> None:
    for name, value in KNOWN_IOCTLS.items():
        assert _uapi(name) == value, f"{name} = {_uapi(name):#x}, expected {value:#x}"


def test_fourccs_and_control_ids() -> None:
    assert uapi.V4L2_PIX_FMT_NV12M_8L128 == 0x3231414E  # 'NA12'
    assert uapi.V4L2_PIX_FMT_NV12M_10BE_8L128 == 0x3231544E | (1 << 31)
    assert uapi.V4L2_CID_MEMORY_USAGE == 0x0098092C
    assert uapi.V4L2_CID_LASTP1 == uapi.V4L2_CID_MEMORY_USAGE + 1


def _c_program() -> str:
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/videodev2.h>",
             "#include <linux/media.h>", "int main(void) {"]
    for struct in STRUCTS:
        lines.append(f'  printf("sizeof {struct} %zu\\n", sizeof(struct {struct}));')
    for struct, field in OFFSETS:
        lines.append(f'  printf("offsetof {struct}.{field} %zu\\n", offsetof(struct {struct}, {field}));')
    for name in [*KNOWN_IOCTLS, *CONSTANTS]:
        lines.append(f'  printf("const {name} %llu\\n", (unsigned long long)(unsigned int)({name}));')
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


def test_layout_matches_the_kernel_header(tmp_path: Path) -> None:
    # scripts/install.sh installs gcc and libc6-dev (which brings linux-libc-dev): never skip.
    assert shutil.which("gcc"), "gcc is missing: run scripts/install.sh"
    assert Path("/usr/include/linux/videodev2.h").exists(), "linux-libc-dev is missing: run scripts/install.sh"
    source = tmp_path / "abi.c"
    source.write_text(_c_program())
    binary = tmp_path / "abi"
    subprocess.run(["gcc", "-o", str(binary), str(source)], check=True, capture_output=True)
    report = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    checked = 0
    for line in report.splitlines():
        kind, name, value = line.split()
        if kind == "sizeof":
            ours = ctypes.sizeof(_uapi(name))
        elif kind == "offsetof":
            struct, field = name.split(".")
            # Members of anonymous unions (value64, stop) are class attributes with their offset too.
            ours = getattr(_uapi(struct), field).offset
        else:
            ours = _uapi(name)
        assert ours == int(value), f"{kind} {name}: vpu_sim says {ours}, the header says {value}"
        checked += 1
    assert checked == len(STRUCTS) + len(OFFSETS) + len(KNOWN_IOCTLS) + len(CONSTANTS)
