"""An open file of a VPU video node: V4L2 ioctls decoded from their bytes and answered.

The device-node forwarding hands each ioctl over as (cmd, the ``_IOC_SIZE`` argument bytes, the
caller's tgid/pid) plus access to the caller's memory for the arrays behind pointers (the plane
array of a multi-planar ``v4l2_buffer``, the control array of ``v4l2_ext_controls``), and sends
back (errno, output bytes). As ``video_usercopy()`` does, output bytes are only meaningful on
success, except for the extended-control ioctls, whose ``error_idx`` is returned with the error.

One ``VideoFile`` serialises its ioctls (as the driver's per-instance lock does) and lets a
blocking DQBUF sleep, without holding that lock, until a frame completes or another thread
queues a buffer.
"""
from __future__ import annotations

import ctypes
import errno
import platform
import re
import threading
from typing import Callable, Protocol, TypeVar

from memtrackfs.errors import KernelError
from vpu_sim import uapi
from vpu_sim.driver import amphion
from vpu_sim.driver.amphion import CoreKind
from vpu_sim.driver.controls import Control, ControlError
from vpu_sim.driver.device import VpuDevice
from vpu_sim.driver.formats import CAPTURE, PixFormat, PlaneFormat, fmtdesc_flags
from vpu_sim.driver.memtrack import Caller
from vpu_sim.driver.queue import DST_QUEUE_OFF_BASE, Buffer

DEVICE_CAPS = uapi.V4L2_CAP_VIDEO_M2M_MPLANE | uapi.V4L2_CAP_STREAMING
BUF_CAPS = (uapi.V4L2_BUF_CAP_SUPPORTS_MMAP | uapi.V4L2_BUF_CAP_SUPPORTS_DMABUF
            | uapi.V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS)

S = TypeVar("S", bound=ctypes.Structure)


class UserMemory(Protocol):
    """copy_from_user/copy_to_user on the calling process; failures raise OSError (EFAULT)."""

    def read(self, address: int, size: int) -> bytes: ...

    def write(self, address: int, data: bytes) -> None: ...


class IoctlError(KernelError):
    """An error whose argument is still copied back (the extended-control ioctls)."""

    def __init__(self, code: int, message: str, output: bytes) -> None:
        super().__init__(code, message)
        self.output = output


def kernel_version(release: str = platform.release()) -> int:
    """LINUX_VERSION_CODE of a release string such as '6.1.0-18-arm64' (QUERYCAP's version)."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if match is None:
        return 0
    major, minor, patch = (int(part or 0) for part in match.groups())
    return (major << 16) | (minor << 8) | min(patch, 255)


def _load(struct: type[S], arg: bytes) -> S:
    """The argument as a struct; a short argument (an _IOR ioctl's) reads as zeros."""
    size = ctypes.sizeof(struct)
    return struct.from_buffer_copy(arg[:size].ljust(size, b"\0"))


def _read_array(user: UserMemory, address: int, element: type[S], count: int) -> list[S]:
    if count == 0:
        return []
    size = ctypes.sizeof(element)
    data = user.read(address, size * count)
    return [element.from_buffer_copy(data, i * size) for i in range(count)]


def _write_array(user: UserMemory, address: int, items: list[S]) -> None:
    if items:
        user.write(address, b"".join(bytes(item) for item in items))


def _pix_format(raw: uapi.v4l2_pix_format_mplane) -> PixFormat:
    planes = min(raw.num_planes, uapi.VIDEO_MAX_PLANES)
    return PixFormat(raw.width, raw.height, raw.pixelformat, raw.field, raw.colorspace,
                     tuple(PlaneFormat(p.sizeimage, p.bytesperline) for p in raw.plane_fmt[:planes]),
                     raw.flags, raw.ycbcr_enc, raw.quantization, raw.xfer_func)


def _store_format(f: uapi.v4l2_format, fmt: PixFormat) -> bytes:
    raw = uapi.v4l2_pix_format_mplane(width=fmt.width, height=fmt.height, pixelformat=fmt.pixelformat,
                                      field=fmt.field, colorspace=fmt.colorspace, num_planes=len(fmt.planes),
                                      flags=fmt.flags, ycbcr_enc=fmt.ycbcr_enc, quantization=fmt.quantization,
                                      xfer_func=fmt.xfer_func)
    for index, plane in enumerate(fmt.planes):
        raw.plane_fmt[index].sizeimage = plane.sizeimage
        raw.plane_fmt[index].bytesperline = plane.bytesperline
    f.fmt.pix_mp = raw
    return bytes(f)


def _fill_buffer(b: uapi.v4l2_buffer, planes: list[uapi.v4l2_plane], buf: Buffer) -> None:
    """__fill_v4l2_buffer() for a multi-planar buffer."""
    b.index = buf.index
    b.memory = buf.memory
    b.flags = buf.flags | buf.state_flags | uapi.V4L2_BUF_FLAG_TIMESTAMP_COPY
    b.field = uapi.V4L2_FIELD_NONE
    b.timestamp.tv_sec, b.timestamp.tv_usec = buf.timestamp
    b.sequence = buf.sequence
    b.length = len(buf.lengths)  # multi-planar: the plane count; b.bytesused is left alone
    base = DST_QUEUE_OFF_BASE if b.type == CAPTURE else 0
    for index, length in enumerate(buf.lengths):
        plane = planes[index]
        plane.length = length
        plane.bytesused = buf.bytesused[index] if index < len(buf.bytesused) else 0
        plane.data_offset = 0
        if buf.memory == uapi.V4L2_MEMORY_MMAP:
            plane.m.mem_offset = base + buf.offsets[index]
        elif index < len(buf.fds):
            plane.m.fd = buf.fds[index]


def _fill_queryctrl(q: uapi.v4l2_queryctrl | uapi.v4l2_query_ext_ctrl, control: Control) -> None:
    q.id = control.id
    q.type = control.type
    q.name = control.name.encode()
    q.flags = control.flags


class VideoFile:
    """One open() of the decoder or encoder node; ``release()`` ends it."""

    def __init__(self, device: VpuDevice, kind: CoreKind, caller: Caller) -> None:
        self.device = device
        self.kind = kind
        self.instance = device.open(kind, caller)
        self._cond = threading.Condition()
        self._released = False
        command = (self._decoder_cmd if kind is CoreKind.DECODER else self._encoder_cmd)
        command_ioctls = ((uapi.VIDIOC_DECODER_CMD, uapi.VIDIOC_TRY_DECODER_CMD) if kind is CoreKind.DECODER
                          else (uapi.VIDIOC_ENCODER_CMD, uapi.VIDIOC_TRY_ENCODER_CMD))
        self._handlers: dict[int, Callable[[bytes, UserMemory, Caller, bool], bytes]] = {
            uapi.VIDIOC_QUERYCAP: self._querycap,
            uapi.VIDIOC_ENUM_FMT: self._enum_fmt,
            uapi.VIDIOC_G_FMT: self._g_fmt,
            uapi.VIDIOC_S_FMT: self._s_fmt,
            uapi.VIDIOC_TRY_FMT: self._try_fmt,
            uapi.VIDIOC_REQBUFS: self._reqbufs,
            uapi.VIDIOC_CREATE_BUFS: self._create_bufs,
            uapi.VIDIOC_QUERYBUF: self._querybuf,
            uapi.VIDIOC_QBUF: self._qbuf,
            uapi.VIDIOC_DQBUF: self._dqbuf,
            uapi.VIDIOC_STREAMON: self._streamon,
            uapi.VIDIOC_STREAMOFF: self._streamoff,
            uapi.VIDIOC_QUERYCTRL: self._queryctrl,
            uapi.VIDIOC_QUERY_EXT_CTRL: self._query_ext_ctrl,
            uapi.VIDIOC_G_CTRL: self._g_ctrl,
            uapi.VIDIOC_S_CTRL: self._s_ctrl,
            uapi.VIDIOC_G_EXT_CTRLS: self._g_ext_ctrls,
            uapi.VIDIOC_S_EXT_CTRLS: self._s_ext_ctrls,
            uapi.VIDIOC_TRY_EXT_CTRLS: self._try_ext_ctrls,
            command_ioctls[0]: lambda arg, user, caller, nb: command(arg, try_only=False),
            command_ioctls[1]: lambda arg, user, caller, nb: command(arg, try_only=True),
        }

    def ioctl(self, cmd: int, arg: bytes, user: UserMemory, caller: Caller, *,
              nonblocking: bool = False) -> tuple[int, bytes]:
        """Run one ioctl; returns (0 or a positive errno, the bytes to copy back to the caller)."""
        handler = self._handlers.get(cmd)
        if handler is None:
            return errno.ENOTTY, b""
        with self._cond:
            try:
                if self._released:
                    raise KernelError(errno.ENODEV, "the file was released")
                return 0, handler(arg, user, caller, nonblocking)
            except IoctlError as exc:
                return exc.errno, exc.output
            except OSError as exc:
                return exc.errno or errno.EIO, b""
            finally:
                self._cond.notify_all()  # a QBUF, STREAMOFF or command may wake a blocked DQBUF

    def release(self) -> None:
        """The last close(): free the instance; a DQBUF still blocked returns ENODEV."""
        with self._cond:
            if self._released:
                return
            self._released = True
            self._cond.notify_all()
            self.device.release(self.instance)

    # -- capabilities and formats ------------------------------------------------------------

    def _querycap(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        cap = uapi.v4l2_capability(driver=amphion.DRIVER_NAME.encode(), card=amphion.CARD_NAMES[self.kind].encode(),
                                   bus_info=amphion.BUS_INFO.encode(), version=kernel_version(),
                                   capabilities=DEVICE_CAPS | uapi.V4L2_CAP_DEVICE_CAPS, device_caps=DEVICE_CAPS)
        return bytes(cap)

    def _enum_fmt(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        d = _load(uapi.v4l2_fmtdesc, arg)
        spec = self.instance.enum_format(d.type, d.index)
        d.flags = fmtdesc_flags(spec, self.kind)
        d.description = spec.description.encode()
        d.pixelformat = spec.fourcc
        d.mbus_code = 0
        return bytes(d)

    def _g_fmt(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        f = _load(uapi.v4l2_format, arg)
        return _store_format(f, self.instance.get_format(f.type))

    def _s_fmt(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        f = _load(uapi.v4l2_format, arg)
        return _store_format(f, self.instance.set_format(f.type, _pix_format(f.fmt.pix_mp)))

    def _try_fmt(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        f = _load(uapi.v4l2_format, arg)
        return _store_format(f, self.instance.try_format(f.type, _pix_format(f.fmt.pix_mp)))

    # -- buffers -----------------------------------------------------------------------------

    def _reqbufs(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        r = _load(uapi.v4l2_requestbuffers, arg)
        r.count = self.instance.request_buffers(r.type, r.count, r.memory, caller)
        r.capabilities = BUF_CAPS
        r.flags = 0
        return bytes(r)

    def _create_bufs(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        c = _load(uapi.v4l2_create_buffers, arg)
        c.index, c.count = self.instance.create_buffers(c.format.type, c.count, c.memory,
                                                        _pix_format(c.format.fmt.pix_mp), caller)
        c.capabilities = BUF_CAPS
        c.flags = 0
        return bytes(c)

    def _buffer_call(self, arg: bytes, user: UserMemory,
                     call: Callable[[uapi.v4l2_buffer, list[uapi.v4l2_plane]], Buffer]) -> bytes:
        """Shared by QUERYBUF, QBUF and DQBUF: the plane array in, the call, both back out."""
        b = _load(uapi.v4l2_buffer, arg)
        if b.length > uapi.VIDEO_MAX_PLANES:
            raise KernelError(errno.EINVAL, f"a buffer has at most {uapi.VIDEO_MAX_PLANES} planes, not {b.length}")
        self.instance.queue(b.type)  # EINVAL for a single-planar or unknown type before touching memory
        planes = _read_array(user, b.m.planes, uapi.v4l2_plane, b.length)
        buf = call(b, planes)
        _fill_buffer(b, planes, buf)
        _write_array(user, b.m.planes, planes)
        return bytes(b)

    def _querybuf(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        return self._buffer_call(arg, user, lambda b, planes: self.instance.query_buffer(b.type, b.index, len(planes)))

    def _qbuf(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        def queue(b: uapi.v4l2_buffer, planes: list[uapi.v4l2_plane]) -> Buffer:
            fds = [p.m.fd for p in planes] if b.memory == uapi.V4L2_MEMORY_DMABUF else []
            return self.instance.queue_buffer(b.type, b.index, b.memory, [p.bytesused for p in planes], fds,
                                              (b.timestamp.tv_sec, b.timestamp.tv_usec), len(planes))
        return self._buffer_call(arg, user, queue)

    def _dqbuf(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        def dequeue(b: uapi.v4l2_buffer, planes: list[uapi.v4l2_plane]) -> Buffer:
            while True:
                try:
                    return self.instance.dequeue_buffer(b.type, len(planes))
                except KernelError as exc:
                    if exc.errno != errno.EAGAIN or nonblocking:
                        raise
                deadline = self.instance.next_event_time()
                self._cond.wait(None if deadline is None else max(0.0, deadline - self.instance.clock()))
                if self._released:
                    raise KernelError(errno.ENODEV, "the file was released during DQBUF")
        return self._buffer_call(arg, user, dequeue)

    def _streamon(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        self.instance.stream_on(_load(ctypes.c_int32, arg).value, caller)
        return b""

    def _streamoff(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        self.instance.stream_off(_load(ctypes.c_int32, arg).value)
        return b""

    # -- controls ----------------------------------------------------------------------------

    def _queryctrl(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        q = _load(uapi.v4l2_queryctrl, arg)
        control = self.instance.controls.query(q.id)
        _fill_queryctrl(q, control)
        # v4l2_queryctrl() reports no range for types the 32-bit struct cannot hold.
        in_range = control.is_int
        q.minimum, q.maximum = (control.minimum, control.maximum) if in_range else (0, 0)
        q.step, q.default_value = (control.step, control.default) if in_range else (0, 0)
        return bytes(q)

    def _query_ext_ctrl(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        q = _load(uapi.v4l2_query_ext_ctrl, arg)
        control = self.instance.controls.query(q.id)
        _fill_queryctrl(q, control)
        q.minimum, q.maximum, q.step, q.default_value = (control.minimum, control.maximum, control.step,
                                                         control.default)
        q.elem_size = 4 if control.is_int else 8
        q.elems = 1
        q.nr_of_dims = 0
        return bytes(q)

    def _g_ctrl(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        c = _load(uapi.v4l2_control, arg)
        c.value = self.instance.controls.get(c.id)
        return bytes(c)

    def _s_ctrl(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        c = _load(uapi.v4l2_control, arg)
        c.value = self.instance.controls.set(c.id, c.value)
        return bytes(c)

    def _ext_ctrls(self, arg: bytes, user: UserMemory,
                   run: Callable[[int, list[uapi.v4l2_ext_control]], list[int]]) -> bytes:
        """Shared by G/S/TRY_EXT_CTRLS: read the array, run, store values and error_idx back."""
        c = _load(uapi.v4l2_ext_controls, arg)
        if c.count > uapi.V4L2_CID_MAX_CTRLS:
            raise KernelError(errno.EINVAL, f"at most {uapi.V4L2_CID_MAX_CTRLS} controls per call, not {c.count}")
        items = _read_array(user, c.controls, uapi.v4l2_ext_control, c.count)
        try:
            values = run(c.which, items)
        except ControlError as exc:
            c.error_idx = exc.index
            _write_array(user, c.controls, items)
            raise IoctlError(exc.errno, exc.message, bytes(c)) from None
        for item, value in zip(items, values):
            if self.instance.controls.find(item.id).is_int:
                item.value = value
            else:
                item.value64 = value
        c.error_idx = c.count
        _write_array(user, c.controls, items)
        return bytes(c)

    def _value(self, item: uapi.v4l2_ext_control) -> int:
        """The member of the value union the control's type uses (an unknown id fails later)."""
        control = self.instance.controls.lookup(item.id)
        return item.value64 if control is not None and not control.is_int else item.value

    def _g_ext_ctrls(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        return self._ext_ctrls(arg, user, lambda which, items: self.instance.controls.get_ext(
            which, [item.id for item in items]))

    def _set_ext_ctrls(self, arg: bytes, user: UserMemory, apply: bool) -> bytes:
        return self._ext_ctrls(arg, user, lambda which, items: self.instance.controls.set_ext(
            which, [(item.id, self._value(item)) for item in items], apply=apply))

    def _s_ext_ctrls(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        return self._set_ext_ctrls(arg, user, apply=True)

    def _try_ext_ctrls(self, arg: bytes, user: UserMemory, caller: Caller, nonblocking: bool) -> bytes:
        return self._set_ext_ctrls(arg, user, apply=False)

    # -- drain ---------------------------------------------------------------------------------

    def _decoder_cmd(self, arg: bytes, *, try_only: bool) -> bytes:
        d = _load(uapi.v4l2_decoder_cmd, arg)
        self.instance.command(d.cmd, try_only=try_only)
        # v4l2_m2m_ioctl_try_decoder_cmd() clears what the stateful decoder does not support.
        d.flags = 0
        if d.cmd == uapi.V4L2_DEC_CMD_STOP:
            d.stop.pts = 0
        else:
            d.start.speed = 0
            d.start.format = uapi.V4L2_DEC_START_FMT_NONE
        return bytes(d)

    def _encoder_cmd(self, arg: bytes, *, try_only: bool) -> bytes:
        e = _load(uapi.v4l2_encoder_cmd, arg)
        self.instance.command(e.cmd, try_only=try_only)
        e.flags = 0
        return bytes(e)
