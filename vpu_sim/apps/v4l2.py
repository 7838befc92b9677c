"""A V4L2 mem2mem device as an application uses it: ``fcntl.ioctl`` with the UAPI structs.

Nothing here knows it talks to a simulation: the same calls work on a real /dev/videoN.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import os
import select
from typing import Optional, Sequence, TypeVar

from vpu_sim import uapi

OUTPUT = uapi.V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
CAPTURE = uapi.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
IOCTL_NAMES = {value: name for name, value in vars(uapi).items() if name.startswith("VIDIOC_")}

C = TypeVar("C", ctypes.Structure, ctypes.c_int32)


class Dequeued:
    __slots__ = ("index", "flags", "bytesused")

    def __init__(self, index: int, flags: int, bytesused: tuple[int, ...]) -> None:
        self.index = index
        self.flags = flags
        self.bytesused = bytesused

    @property
    def last(self) -> bool:
        return bool(self.flags & uapi.V4L2_BUF_FLAG_LAST)


class V4l2Device:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR)
        self.planes: dict[int, int] = {}  # buffer type -> planes per buffer (from the format)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "V4l2Device":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ioctl(self, cmd: int, arg: C) -> C:
        """The ioctl; an error names it (``VIDIOC_DQBUF: Connection timed out``), as v4l2 tools do."""
        try:
            fcntl.ioctl(self.fd, cmd, arg)
        except OSError as exc:
            raise OSError(exc.errno, f"{IOCTL_NAMES.get(cmd, hex(cmd))}: {exc.strerror}") from None
        return arg

    def querycap(self) -> uapi.v4l2_capability:
        return self._ioctl(uapi.VIDIOC_QUERYCAP, uapi.v4l2_capability())

    def get_format(self, buf_type: int) -> uapi.v4l2_format:
        fmt = self._ioctl(uapi.VIDIOC_G_FMT, uapi.v4l2_format(type=buf_type))
        self.planes[buf_type] = fmt.fmt.pix_mp.num_planes
        return fmt

    def set_format(self, buf_type: int, pixelformat: int, width: int, height: int) -> uapi.v4l2_format:
        fmt = uapi.v4l2_format(type=buf_type)
        fmt.fmt.pix_mp.pixelformat = pixelformat
        fmt.fmt.pix_mp.width = width
        fmt.fmt.pix_mp.height = height
        self._ioctl(uapi.VIDIOC_S_FMT, fmt)
        self.planes[buf_type] = fmt.fmt.pix_mp.num_planes
        return fmt

    def request_buffers(self, buf_type: int, count: int) -> int:
        req = uapi.v4l2_requestbuffers(count=count, type=buf_type, memory=uapi.V4L2_MEMORY_MMAP)
        return self._ioctl(uapi.VIDIOC_REQBUFS, req).count

    def _buffer(self, buf_type: int, index: int = 0) -> tuple[uapi.v4l2_buffer, ctypes.Array]:
        planes = (uapi.v4l2_plane * uapi.VIDEO_MAX_PLANES)()
        buf = uapi.v4l2_buffer(index=index, type=buf_type, memory=uapi.V4L2_MEMORY_MMAP,
                               length=self.planes.get(buf_type, 1))
        buf.m.planes = ctypes.addressof(planes)  # the kernel follows this pointer (copy_from_user)
        return buf, planes

    def queue(self, buf_type: int, index: int, bytesused: Sequence[int] = ()) -> None:
        buf, planes = self._buffer(buf_type, index)
        for i, used in enumerate(bytesused):
            planes[i].bytesused = used
        self._ioctl(uapi.VIDIOC_QBUF, buf)

    def dequeue(self, buf_type: int) -> Dequeued:
        buf, planes = self._buffer(buf_type)
        self._ioctl(uapi.VIDIOC_DQBUF, buf)
        return Dequeued(buf.index, buf.flags, tuple(planes[i].bytesused for i in range(buf.length)))

    def stream_on(self, buf_type: int) -> None:
        self._ioctl(uapi.VIDIOC_STREAMON, ctypes.c_int32(buf_type))

    def stream_off(self, buf_type: int) -> None:
        self._ioctl(uapi.VIDIOC_STREAMOFF, ctypes.c_int32(buf_type))

    def get_control(self, control_id: int) -> int:
        return self._ioctl(uapi.VIDIOC_G_CTRL, uapi.v4l2_control(id=control_id)).value

    def get_control64(self, control_id: int) -> int:
        """A 64-bit control (V4L2_CID_MEMORY_USAGE): only VIDIOC_G_EXT_CTRLS can read it."""
        control = uapi.v4l2_ext_control(id=control_id)
        controls = uapi.v4l2_ext_controls(which=uapi.V4L2_CTRL_WHICH_CUR_VAL, count=1)
        controls.controls = ctypes.addressof(control)
        self._ioctl(uapi.VIDIOC_G_EXT_CTRLS, controls)
        return control.value64

    def subscribe_event(self, event_type: int) -> None:
        self._ioctl(uapi.VIDIOC_SUBSCRIBE_EVENT, uapi.v4l2_event_subscription(type=event_type))

    def wait_event(self, timeout: float) -> uapi.v4l2_event:
        """The next subscribed event: select() on exceptfds (an event is POLLPRI), then DQEVENT."""
        if not select.select([], [], [self.fd], timeout)[2]:
            raise OSError(errno.ETIMEDOUT, f"no V4L2 event within {timeout:g} s")
        return self._ioctl(uapi.VIDIOC_DQEVENT, uapi.v4l2_event())

    def stop(self, decoder: bool) -> None:
        """DECODER_CMD/ENCODER_CMD STOP: drain; the last CAPTURE buffer comes flagged LAST."""
        if decoder:
            self._ioctl(uapi.VIDIOC_DECODER_CMD, uapi.v4l2_decoder_cmd(cmd=uapi.V4L2_DEC_CMD_STOP))
        else:
            self._ioctl(uapi.VIDIOC_ENCODER_CMD, uapi.v4l2_encoder_cmd(cmd=uapi.V4L2_ENC_CMD_STOP))


def find_node(dev_dir: str, card: str) -> str:
    """The /dev/video* node whose QUERYCAP card is ``card`` (as applications look them up)."""
    seen = []
    for path in sorted(glob.glob(os.path.join(dev_dir, "video*"))):
        try:
            with V4l2Device(path) as dev:
                name = bytes(dev.querycap().card).split(b"\0", 1)[0].decode()
        except OSError:
            continue
        if name == card:
            return path
        seen.append(f"{path}: {name}")
    raise FileNotFoundError(f"no '{card}' node under {dev_dir} (found: {', '.join(seen) or 'none'}); "
                            "is vpu-sim daemon running?")


CODECS = {"h264": uapi.V4L2_PIX_FMT_H264, "hevc": uapi.V4L2_PIX_FMT_HEVC, "vp8": uapi.V4L2_PIX_FMT_VP8,
          "mpeg2": uapi.V4L2_PIX_FMT_MPEG2, "mpeg4": uapi.V4L2_PIX_FMT_MPEG4}


def fourcc(name: Optional[str]) -> int:
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; choose from {', '.join(CODECS)}")
    return CODECS[name]
