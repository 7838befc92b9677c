"""An in-memory rig for the simulated VPU's instances: the V4L2 ioctl ABI against a fake tracker.

``FakeMemTrack`` keeps the RFC's tree (nodes with own bytes and counts, named leaves) and fires
notify callbacks at once; ``UserSpace`` plays the calling process's memory for the arrays behind
pointers; ``Client`` issues ioctls the way an application does, with the uapi structs.
"""
from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass, field
from typing import Callable, Optional

from vpu_sim import uapi
from vpu_sim.driver.accounting import Memory
from vpu_sim.driver.amphion.device import VpuDevice
from vpu_sim.driver.amphion.ioctls import VideoFile
from vpu_sim.driver.amphion.model import CoreKind
from vpu_sim.driver.memtrack import Caller, MemoryArea

OUT = uapi.V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
CAP = uapi.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
APP = Caller(4242, 4243)
MIB = 1 << 20


# -- fakes -----------------------------------------------------------------------------------------
@dataclass
class FakeNode:
    name: Optional[str]
    parent: Optional[int]
    caller: Caller
    own: int = 0
    count: int = 0
    leaves: list[tuple[str, int, Caller]] = field(default_factory=list)
    children: list[int] = field(default_factory=list)


class FakeMemTrack:
    """The tracker as the driver sees it; strict where the RFC would only warn, to catch bugs."""

    def __init__(self) -> None:
        self.nodes: dict[int, FakeNode] = {}
        self.watches: dict[int, tuple[int, Callable[[int], None]]] = {}
        self.destroyed: list[int] = []
        self.calls: list[tuple[str, int, int, Optional[str]]] = []   # ("add"|"sub", node, bytes, name)
        self._next = 1

    def _new(self, node: FakeNode) -> int:
        handle, self._next = self._next, self._next + 1
        self.nodes[handle] = node
        if node.parent is not None:
            self.nodes[node.parent].children.append(handle)
        return handle

    def create_root(self, name: str, caller: Caller) -> int:
        return self._new(FakeNode(name, None, caller))

    def create_node(self, parent: int, name: Optional[str], caller: Caller) -> int:
        return self._new(FakeNode(name, parent, caller))

    def _notify(self, handle: Optional[int]) -> None:
        while handle is not None:
            if handle in self.watches:
                self.watches[handle][1](self.usage(handle))
            handle = self.nodes[handle].parent

    def add(self, node: int, nbytes: int, name: Optional[str], caller: Caller) -> None:
        self.calls.append(("add", node, nbytes, name))
        target = self.nodes[node]
        if name is None:
            target.own += nbytes
            target.count += 1
        else:
            target.leaves.append((name, nbytes, caller))
        self._notify(node)

    def sub(self, node: int, nbytes: int, name: Optional[str]) -> None:
        self.calls.append(("sub", node, nbytes, name))
        target = self.nodes[node]
        if name is None:
            assert target.own >= nbytes and target.count > 0, "unnamed sub below zero"
            target.own -= nbytes
            target.count -= 1
        else:
            match = next(i for i, (n, b, _) in enumerate(target.leaves) if (n, b) == (name, nbytes))
            del target.leaves[match]
        self._notify(node)

    def destroy(self, node: int) -> None:
        assert self.usage(node) == 0, f"destroying {self.nodes[node].name} with {self.usage(node)} bytes in use"
        assert node not in self.watches, "destroyed while watched"
        parent = self.nodes[node].parent
        if parent is not None:
            self.nodes[parent].children.remove(node)
        stack = [node]
        while stack:
            handle = stack.pop()
            stack.extend(self.nodes[handle].children)
            del self.nodes[handle]
            self.destroyed.append(handle)

    def watch(self, node: int, delay_ms: int, callback: Callable[[int], None]) -> None:
        self.watches[node] = (delay_ms, callback)

    def unwatch(self, node: int) -> None:
        del self.watches[node]

    # -- inspection --
    def usage(self, handle: int) -> int:
        node = self.nodes[handle]
        return node.own + sum(b for _, b, _ in node.leaves) + sum(self.usage(c) for c in node.children)

    def child(self, parent: int, name: str) -> int:
        (handle,) = [c for c in self.nodes[parent].children if self.nodes[c].name == name]
        return handle

    def leaves(self, handle: int, name: str) -> list[int]:
        return [b for n, b, _ in self.nodes[handle].leaves if n == name]

    def queue_node(self, instance: int, name: str) -> FakeNode:
        return self.nodes[self.child(instance, name)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class UserSpace:
    """The calling process's memory: arrays behind pointers live here."""

    def __init__(self) -> None:
        self.blocks: dict[int, bytearray] = {}
        self._next = 0x7F0000000000

    def put(self, data: bytes) -> int:
        address, self._next = self._next, self._next + max(len(data), 1) + 4096
        self.blocks[address] = bytearray(data)
        return address

    def _block(self, address: int, size: int) -> tuple[bytearray, int]:
        for base, block in self.blocks.items():
            if base <= address and address + size <= base + len(block):
                return block, address - base
        raise OSError(errno.EFAULT, f"bad address {address:#x}")

    def read(self, address: int, size: int) -> bytes:
        block, offset = self._block(address, size)
        return bytes(block[offset:offset + size])

    def write(self, address: int, data: bytes) -> None:
        block, offset = self._block(address, len(data))
        block[offset:offset + len(data)] = data

    def read_buffer(self, offset: int, size: int) -> bytes:
        """No buffer is mapped here: the driver sees no bitstream (one picture per buffer)."""
        return b""


class Client:
    """An application using one open file of a video node through the uapi structs."""

    def __init__(self, file: VideoFile, caller: Caller = APP) -> None:
        self.file = file
        self.caller = caller
        self.user = UserSpace()

    def call(self, cmd: int, arg: ctypes.Structure | ctypes.c_int32 | None = None,
             nonblocking: bool = True) -> tuple[int, bytes]:
        return self.file.ioctl(cmd, bytes(arg) if arg is not None else b"", self.user, self.caller,
                               nonblocking=nonblocking)

    def ok(self, cmd: int, arg: ctypes.Structure) -> ctypes.Structure:
        err, out = self.call(cmd, arg)
        assert err == 0, f"ioctl {cmd:#x} failed: {errno.errorcode.get(err, err)}"
        return type(arg).from_buffer_copy(out) if out else arg

    def s_fmt(self, buf_type: int, fourcc: int, width: int, height: int) -> uapi.v4l2_pix_format_mplane:
        f = uapi.v4l2_format(type=buf_type)
        f.fmt.pix_mp.width, f.fmt.pix_mp.height, f.fmt.pix_mp.pixelformat = width, height, fourcc
        return self.ok(uapi.VIDIOC_S_FMT, f).fmt.pix_mp

    def g_fmt(self, buf_type: int) -> uapi.v4l2_pix_format_mplane:
        return self.ok(uapi.VIDIOC_G_FMT, uapi.v4l2_format(type=buf_type)).fmt.pix_mp

    def reqbufs(self, buf_type: int, count: int, memory: int = uapi.V4L2_MEMORY_MMAP) -> tuple[int, int]:
        err, out = self.call(uapi.VIDIOC_REQBUFS, uapi.v4l2_requestbuffers(count=count, type=buf_type, memory=memory))
        return err, (uapi.v4l2_requestbuffers.from_buffer_copy(out).count if not err else 0)

    def stream(self, cmd: int, buf_type: int) -> int:
        return self.call(cmd, ctypes.c_int32(buf_type))[0]

    def _buffer(self, cmd: int, buf_type: int, index: int = 0, bytesused: int = 0,
                nplanes: Optional[int] = None, timestamp: tuple[int, int] = (0, 0),
                nonblocking: bool = True) -> tuple[int, uapi.v4l2_buffer, list[uapi.v4l2_plane]]:
        nplanes = (1 if buf_type == OUT and self.file.kind is CoreKind.DECODER else
                   1 if buf_type == CAP and self.file.kind is CoreKind.ENCODER else 2) if nplanes is None else nplanes
        planes = (uapi.v4l2_plane * max(nplanes, 1))()
        for plane in planes:
            plane.bytesused = bytesused
        address = self.user.put(bytes(planes))
        b = uapi.v4l2_buffer(index=index, type=buf_type, memory=uapi.V4L2_MEMORY_MMAP, length=nplanes)
        b.m.planes = address
        b.timestamp.tv_sec, b.timestamp.tv_usec = timestamp
        err, out = self.call(cmd, b, nonblocking=nonblocking)
        result = uapi.v4l2_buffer.from_buffer_copy(out) if out else b
        got = uapi.v4l2_plane * max(nplanes, 1)
        return err, result, list(got.from_buffer_copy(self.user.read(address, ctypes.sizeof(got))))

    def qbuf(self, buf_type: int, index: int, bytesused: int = 0, **kwargs) -> int:
        return self._buffer(uapi.VIDIOC_QBUF, buf_type, index, bytesused, **kwargs)[0]

    def dqbuf(self, buf_type: int, **kwargs) -> tuple[int, uapi.v4l2_buffer, list[uapi.v4l2_plane]]:
        return self._buffer(uapi.VIDIOC_DQBUF, buf_type, **kwargs)

    def querybuf(self, buf_type: int, index: int) -> tuple[int, uapi.v4l2_buffer, list[uapi.v4l2_plane]]:
        return self._buffer(uapi.VIDIOC_QUERYBUF, buf_type, index)

    def ext_ctrls(self, cmd: int, values: list[tuple[int, int]], which: int = 0,
                  int64: bool = False) -> tuple[int, uapi.v4l2_ext_controls, list[uapi.v4l2_ext_control]]:
        array = (uapi.v4l2_ext_control * max(len(values), 1))()
        for item, (ctrl_id, value) in zip(array, values):
            item.id = ctrl_id
            if int64:
                item.value64 = value
            else:
                item.value = value
        address = self.user.put(bytes(array))
        c = uapi.v4l2_ext_controls(which=which, count=len(values), controls=address)
        err, out = self.call(cmd, c)
        items = list(type(array).from_buffer_copy(self.user.read(address, ctypes.sizeof(array))))
        return err, uapi.v4l2_ext_controls.from_buffer_copy(out) if out else c, items[:len(values)]

    def memory_usage(self) -> int:
        err, _, items = self.ext_ctrls(uapi.VIDIOC_G_EXT_CTRLS, [(uapi.V4L2_CID_MEMORY_USAGE, 0)])
        assert err == 0
        return items[0].value64

    def g_ctrl(self, ctrl_id: int) -> tuple[int, int]:
        err, out = self.call(uapi.VIDIOC_G_CTRL, uapi.v4l2_control(id=ctrl_id))
        return err, (uapi.v4l2_control.from_buffer_copy(out).value if not err else 0)


@dataclass
class Rig:
    memtrack: FakeMemTrack
    clock: FakeClock
    device: VpuDevice
    cma: MemoryArea

    def open(self, kind: CoreKind, caller: Caller = APP) -> Client:
        return Client(VideoFile(self.device, kind, caller), caller)


def make_rig(board: str = "imx8qxp", cma_bytes: Optional[int] = None, fps: float = 30.0) -> Rig:
    memtrack, clock = FakeMemTrack(), FakeClock()
    cma = MemoryArea("cma", cma_bytes)
    device = VpuDevice(Memory(memtrack, cma, cma), board, clock=clock, fps=fps)
    return Rig(memtrack, clock, device, cma)




def start_decoder(client: Client, width: int = 1920, height: int = 1080, out_count: int = 8,
                  cap_count: int = 8) -> None:
    """The stateful decoding sequence up to streaming on both queues with every buffer queued."""
    client.s_fmt(OUT, uapi.V4L2_PIX_FMT_H264, width, height)
    assert client.reqbufs(OUT, out_count) == (0, out_count)
    assert client.stream(uapi.VIDIOC_STREAMON, OUT) == 0
    assert client.qbuf(OUT, 0, 5000, timestamp=(1, 0)) == 0   # the sequence header's buffer
    parse_header(client)
    assert client.reqbufs(CAP, cap_count)[0] == 0
    assert client.stream(uapi.VIDIOC_STREAMON, CAP) == 0
    for index in range(cap_count):
        assert client.qbuf(CAP, index) == 0


def parse_header(client: Client) -> None:
    """Let the firmware report the header: one frame period after the first OUTPUT buffer."""
    instance = client.file.instance
    if isinstance(instance.clock, FakeClock):
        instance.advance()
        instance.clock.now += instance.frame_period
        instance.advance()


def instance_of(client: Client) -> int:
    return client.file.instance.node


# -- the model's trees -----------------------------------------------------------------------------
