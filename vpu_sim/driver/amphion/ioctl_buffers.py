"""The buffer ioctls of a VPU node: REQBUFS, CREATE_BUFS, QUERYBUF, PREPARE_BUF, QBUF, DQBUF,
STREAMON/OFF (``videobuf2-v4l2.c`` and ``v4l2-mem2mem.c`` of Linux 6.1).

A multi-planar ``v4l2_buffer`` points at its plane array in the caller's memory: it is read with
copy_from_user and written back with copy_to_user. CAPTURE mmap offsets are shifted by
``DST_QUEUE_OFF_BASE`` so one offset space serves both queues (``v4l2_m2m_adjust_mem_offset()``).
"""
from __future__ import annotations

import ctypes
import errno
from typing import Callable

from memtrackfs.errors import KernelError
from vpu_sim import uapi
from vpu_sim.driver.amphion.formats import CAPTURE
from vpu_sim.driver.amphion.ioctl_formats import format_argument
from vpu_sim.driver.amphion.ioctls import Call, load
from vpu_sim.driver.amphion.queue import (
    DST_QUEUE_OFF_BASE,
    Buffer,
    Metadata,
    QueueRequest,
)

BUF_CAPS = (uapi.V4L2_BUF_CAP_SUPPORTS_MMAP | uapi.V4L2_BUF_CAP_SUPPORTS_DMABUF
            | uapi.V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS)


def _read_planes(call: Call, b: uapi.v4l2_buffer) -> list[uapi.v4l2_plane]:
    if b.length == 0:
        return []
    size = ctypes.sizeof(uapi.v4l2_plane)
    data = call.user.read(b.m.planes, size * b.length)
    return [uapi.v4l2_plane.from_buffer_copy(data, i * size) for i in range(b.length)]


def _fill_buffer(b: uapi.v4l2_buffer, planes: list[uapi.v4l2_plane], buf: Buffer) -> None:
    """__fill_v4l2_buffer() for a multi-planar buffer."""
    b.index = buf.index
    b.memory = buf.memory
    b.flags = buf.flags | buf.state_flags | uapi.V4L2_BUF_FLAG_TIMESTAMP_COPY
    b.field = buf.metadata.field
    b.timestamp.tv_sec, b.timestamp.tv_usec = buf.timestamp
    ctypes.memmove(ctypes.addressof(b.timecode), buf.metadata.timecode, ctypes.sizeof(b.timecode))
    b.sequence = buf.sequence
    b.length = len(buf.lengths)  # multi-planar: the plane count; b.bytesused is left alone
    b.reserved2 = b.request_fd = 0
    base = DST_QUEUE_OFF_BASE if b.type == CAPTURE else 0
    for index, length in enumerate(buf.lengths):
        plane = uapi.v4l2_plane(length=length)
        plane.bytesused = buf.bytesused[index] if index < len(buf.bytesused) else 0
        plane.data_offset = buf.data_offsets[index] if index < len(buf.data_offsets) else 0
        if buf.memory == uapi.V4L2_MEMORY_MMAP:
            plane.m.mem_offset = base + buf.offsets[index]
        elif index < len(buf.fds):
            plane.m.fd = buf.fds[index]
        planes[index] = plane


def _buffer_call(call: Call, act: Callable[[uapi.v4l2_buffer, list[uapi.v4l2_plane]], Buffer]) -> bytes:
    """Shared by QUERYBUF, PREPARE_BUF, QBUF and DQBUF: the plane array in, the call, both back out."""
    b = load(uapi.v4l2_buffer, call.arg)
    if b.length > uapi.VIDEO_MAX_PLANES:
        raise KernelError(errno.EINVAL, f"a buffer has at most {uapi.VIDEO_MAX_PLANES} planes, not {b.length}")
    call.instance.queue(b.type)  # EINVAL for a single-planar or unknown type before touching memory
    planes = _read_planes(call, b)
    buf = act(b, planes)
    _fill_buffer(b, planes, buf)
    if planes:
        call.user.write(b.m.planes, b"".join(bytes(plane) for plane in planes))
    return bytes(b)


def _request(b: uapi.v4l2_buffer, planes: list[uapi.v4l2_plane]) -> QueueRequest:
    timecode = bytes(b.timecode)
    return QueueRequest(memory=b.memory, bytesused=tuple(p.bytesused for p in planes),
                        data_offsets=tuple(p.data_offset for p in planes),
                        fds=tuple(p.m.fd for p in planes) if b.memory == uapi.V4L2_MEMORY_DMABUF else (),
                        planes=len(planes), flags=b.flags,
                        metadata=Metadata((b.timestamp.tv_sec, b.timestamp.tv_usec), 0, b.field, timecode))


def reqbufs(call: Call) -> bytes:
    r = load(uapi.v4l2_requestbuffers, call.arg)
    count = call.instance.request_buffers(r.type, r.count, r.memory, call.caller)
    return bytes(uapi.v4l2_requestbuffers(count=count, type=r.type, memory=r.memory, capabilities=BUF_CAPS))


def create_bufs(call: Call) -> bytes:
    c = load(uapi.v4l2_create_buffers, call.arg)
    c.index, c.count = call.instance.create_buffers(c.format.type, c.count, c.memory, format_argument(c.format),
                                                    call.caller)
    c.capabilities = BUF_CAPS
    c.flags = 0
    c.reserved[:] = [0] * len(c.reserved)
    return bytes(c)


def querybuf(call: Call) -> bytes:
    return _buffer_call(call, lambda b, planes: call.instance.query_buffer(b.type, b.index, len(planes)))


def prepare_buf(call: Call) -> bytes:
    return _buffer_call(call, lambda b, planes: call.instance.prepare_buffer(b.type, b.index, _request(b, planes)))


def qbuf(call: Call) -> bytes:
    def read(buf: Buffer) -> bytes:
        """The bitstream in an MMAP OUTPUT buffer, as the application's mapping holds it."""
        if buf.memory != uapi.V4L2_MEMORY_MMAP or not buf.bytesused:
            return b""
        try:
            return call.user.read_buffer(buf.offsets[0] + buf.data_offsets[0], buf.bytesused[0] - buf.data_offsets[0])
        except OSError:
            return b""
    return _buffer_call(call, lambda b, planes: call.instance.queue_buffer(b.type, b.index, _request(b, planes),
                                                                           read))


def dqbuf(call: Call) -> bytes:
    def dequeue(b: uapi.v4l2_buffer, planes: list[uapi.v4l2_plane]) -> Buffer:
        found: list[Buffer] = []

        def ready() -> bool:
            try:
                found.append(call.instance.dequeue_buffer(b.type, len(planes)))
            except KernelError as exc:
                if exc.errno != errno.EAGAIN or call.nonblocking:
                    raise
                return False
            return True

        call.file.wait(ready, "DQBUF")
        return found[0]
    return _buffer_call(call, dequeue)


def streamon(call: Call) -> bytes:
    call.instance.stream_on(load(ctypes.c_int32, call.arg).value, call.caller)
    return b""


def streamoff(call: Call) -> bytes:
    call.instance.stream_off(load(ctypes.c_int32, call.arg).value)
    return b""
