"""Which ioctls each VPU node has, and what the V4L2 core does with their arguments.

The decoder's and the encoder's ``v4l2_ioctl_ops`` of Linux 6.1 (``vdec.c``, ``venc.c``), seen
through ``determine_valid_ioctls()``: an ioctl the driver has no op for is ENOTTY (EXPBUF
deliberately: README), G_SELECTION brings CROPCAP and G_CROP, S_SELECTION brings S_CROP.
``prio`` and ``clear_after`` are ``v4l2_ioctls[]``'s INFO_FL_PRIO and INFO_FL_CLEAR.
"""
from __future__ import annotations

from vpu_sim import uapi
from vpu_sim.driver.amphion import ioctl_buffers as buffers
from vpu_sim.driver.amphion import ioctl_controls as controls
from vpu_sim.driver.amphion import ioctl_formats as formats
from vpu_sim.driver.amphion.ioctls import IoctlInfo, clear_after
from vpu_sim.driver.amphion.model import CoreKind

_COMMON = {
    uapi.VIDIOC_QUERYCAP: IoctlInfo(formats.querycap),
    uapi.VIDIOC_ENUM_FMT: IoctlInfo(formats.enum_fmt),
    uapi.VIDIOC_G_FMT: IoctlInfo(formats.g_fmt),
    uapi.VIDIOC_S_FMT: IoctlInfo(formats.s_fmt, prio=True),
    uapi.VIDIOC_TRY_FMT: IoctlInfo(formats.try_fmt),
    uapi.VIDIOC_G_SELECTION: IoctlInfo(formats.g_selection, clear_after=clear_after(uapi.v4l2_selection, "r")),
    uapi.VIDIOC_CROPCAP: IoctlInfo(formats.cropcap, clear_after=clear_after(uapi.v4l2_cropcap, "type")),
    uapi.VIDIOC_G_CROP: IoctlInfo(formats.g_crop, clear_after=clear_after(uapi.v4l2_crop, "type")),
    uapi.VIDIOC_REQBUFS: IoctlInfo(buffers.reqbufs, prio=True),
    uapi.VIDIOC_CREATE_BUFS: IoctlInfo(buffers.create_bufs, prio=True),
    uapi.VIDIOC_QUERYBUF: IoctlInfo(buffers.querybuf, clear_after=clear_after(uapi.v4l2_buffer, "length")),
    uapi.VIDIOC_PREPARE_BUF: IoctlInfo(buffers.prepare_buf),
    uapi.VIDIOC_QBUF: IoctlInfo(buffers.qbuf),
    uapi.VIDIOC_DQBUF: IoctlInfo(buffers.dqbuf),
    uapi.VIDIOC_STREAMON: IoctlInfo(buffers.streamon, prio=True),
    uapi.VIDIOC_STREAMOFF: IoctlInfo(buffers.streamoff, prio=True),
    uapi.VIDIOC_QUERYCTRL: IoctlInfo(controls.queryctrl, clear_after=clear_after(uapi.v4l2_queryctrl, "id")),
    uapi.VIDIOC_QUERY_EXT_CTRL: IoctlInfo(controls.query_ext_ctrl,
                                          clear_after=clear_after(uapi.v4l2_query_ext_ctrl, "id")),
    uapi.VIDIOC_QUERYMENU: IoctlInfo(controls.querymenu, clear_after=clear_after(uapi.v4l2_querymenu, "index")),
    uapi.VIDIOC_G_CTRL: IoctlInfo(controls.g_ctrl, clear_after=clear_after(uapi.v4l2_control, "id")),
    uapi.VIDIOC_S_CTRL: IoctlInfo(controls.s_ctrl, prio=True),
    uapi.VIDIOC_G_EXT_CTRLS: IoctlInfo(controls.g_ext_ctrls),
    uapi.VIDIOC_S_EXT_CTRLS: IoctlInfo(controls.s_ext_ctrls, prio=True),
    uapi.VIDIOC_TRY_EXT_CTRLS: IoctlInfo(controls.try_ext_ctrls),
    uapi.VIDIOC_SUBSCRIBE_EVENT: IoctlInfo(controls.subscribe_event),
    uapi.VIDIOC_UNSUBSCRIBE_EVENT: IoctlInfo(controls.unsubscribe_event),
    uapi.VIDIOC_DQEVENT: IoctlInfo(controls.dqevent),
    uapi.VIDIOC_G_PRIORITY: IoctlInfo(controls.g_priority),
    uapi.VIDIOC_S_PRIORITY: IoctlInfo(controls.s_priority, prio=True),
}

_DECODER = {
    uapi.VIDIOC_DECODER_CMD: IoctlInfo(lambda call: formats.decoder_cmd(call, try_only=False), prio=True),
    uapi.VIDIOC_TRY_DECODER_CMD: IoctlInfo(lambda call: formats.decoder_cmd(call, try_only=True)),
}

_ENCODER_CMD_CLEAR = clear_after(uapi.v4l2_encoder_cmd, "flags")
_ENCODER = {
    uapi.VIDIOC_ENCODER_CMD: IoctlInfo(lambda call: formats.encoder_cmd(call, try_only=False), prio=True,
                                       clear_after=_ENCODER_CMD_CLEAR),
    uapi.VIDIOC_TRY_ENCODER_CMD: IoctlInfo(lambda call: formats.encoder_cmd(call, try_only=True),
                                           clear_after=_ENCODER_CMD_CLEAR),
    uapi.VIDIOC_S_SELECTION: IoctlInfo(formats.s_selection, prio=True,
                                       clear_after=clear_after(uapi.v4l2_selection, "r")),
    uapi.VIDIOC_S_CROP: IoctlInfo(formats.s_crop, prio=True),
    uapi.VIDIOC_ENUM_FRAMESIZES: IoctlInfo(formats.enum_framesizes,
                                           clear_after=clear_after(uapi.v4l2_frmsizeenum, "pixel_format")),
    uapi.VIDIOC_G_PARM: IoctlInfo(formats.g_parm, clear_after=clear_after(uapi.v4l2_streamparm, "type")),
    uapi.VIDIOC_S_PARM: IoctlInfo(formats.s_parm, prio=True),
}

TABLES = {CoreKind.DECODER: {**_COMMON, **_DECODER}, CoreKind.ENCODER: {**_COMMON, **_ENCODER}}


def ioctl_table(kind: CoreKind) -> dict[int, IoctlInfo]:
    return TABLES[kind]
