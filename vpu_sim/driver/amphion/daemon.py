"""``vpu-sim daemon``: the simulated Amphion VPU driver, serving its video nodes on a mount.

It connects to the mount's socket as a driver whose state goes with it (``destroy_on_close``),
probes (``amphion-vpu`` root with the cores' ``fw``/``rpc``), registers the decoder and encoder
nodes and the media device (each with its sysfs identity), and serves each open file's ioctls
and polls with ``vpu_sim.driver.amphion.ioctls.VideoFile`` (``media.MediaFile`` for the media device),
through ``memtrackfs.driverkit``: every forwarded call on its own worker thread.
"""
from __future__ import annotations

import errno
import os
from typing import Any

from memtrackfs.driverkit import Call, DeviceDriver, OutputError
from vpu_sim import media_uapi, uapi
from vpu_sim.driver.accounting import Memory
from vpu_sim.driver.amphion import model as amphion
from vpu_sim.driver.amphion.device import VpuDevice
from vpu_sim.driver.amphion.faults import NO_FAULTS, Faults
from vpu_sim.driver.amphion.ioctls import VideoFile
from vpu_sim.driver.amphion.media import MediaFile, Topology, VideoFunction
from vpu_sim.driver.amphion.model import CoreKind
from vpu_sim.driver.memtrack import Backing, Caller, MemoryArea
from vpu_sim.driver.remote import HeapBacking, SocketMemTrack

# Where vb2's planes come from, per allocator (the 2009 videobuf allocator RFC's three kinds).
ALLOCATORS = ("dma-contig", "dma-sg", "vmalloc")
NODE_NAMES = {CoreKind.DECODER: "video0", CoreKind.ENCODER: "video1"}
MEDIA_NODE = "media0"
_FUNCTIONS = {CoreKind.DECODER: media_uapi.MEDIA_ENT_F_PROC_VIDEO_DECODER,
              CoreKind.ENCODER: media_uapi.MEDIA_ENT_F_PROC_VIDEO_ENCODER}
# The ioctls after which the file's buffers, so what mmap() may reach, have changed.
_BUFFER_SETUP = (uapi.VIDIOC_REQBUFS, uapi.VIDIOC_CREATE_BUFS)


class VpuDaemon(DeviceDriver):
    name = "vpu_sim"
    program = "vpu-sim"

    def __init__(self, socket_path: str, board: str = "imx8qxp", fps: float = 30.0,
                 allocator: str = "dma-contig", faults: Faults = NO_FAULTS) -> None:
        super().__init__(socket_path)
        self.memtrack = SocketMemTrack(self.client)
        memory = Memory(self.memtrack, coherent=HeapBacking(self.client), planes=self._planes(allocator))
        pid = os.getpid()  # probe runs in the driver's own context, as at module load
        self.device = VpuDevice(memory, board, caller=Caller(pid, pid), fps=fps, faults=faults)
        self.files: dict[int, VideoFile | MediaFile] = {}
        self.nonblocking: dict[int, bool] = {}
        self._kinds = {name: kind for kind, name in NODE_NAMES.items()}
        self._last_video: dict[int, str] = {}  # tgid -> the video node it opened last
        self.topology = Topology([VideoFunction(name, amphion.VIDEO_NODE_NAMES[kind], _FUNCTIONS[kind])
                                  for kind, name in NODE_NAMES.items()])
        for kind, name in NODE_NAMES.items():
            self.register(name, _sysfs("video4linux", amphion.VIDEO_NODE_NAMES[kind]))
        self.register(MEDIA_NODE, _sysfs("media", amphion.MEDIA_MODEL))
        self.log(6, f"amphion-vpu: {board} probed, decoder dev/{NODE_NAMES[CoreKind.DECODER]}, "
                    f"encoder dev/{NODE_NAMES[CoreKind.ENCODER]}, {allocator} vb2 planes")
        if faults.specs:
            # Whoever reads the kernel log of a faulty run should learn that the faults were on purpose.
            self.log(4, "amphion-vpu: injected faults: " + " ".join(str(spec) for spec in faults.specs))

    def _planes(self, allocator: str) -> Backing:
        if allocator == "dma-contig":
            return HeapBacking(self.client)
        if allocator == "dma-sg":
            return HeapBacking(self.client, "system")
        return MemoryArea("vmalloc")  # vmalloc'd planes are no DMA memory: no heap sees them

    # -- forwarded file operations ------------------------------------------------------------

    def notify(self, event: dict[str, Any]) -> None:
        self.memtrack.deliver(event)

    def open(self, call: Call) -> bytes:
        if call.device == MEDIA_NODE:
            self.files[call.file] = MediaFile(self.topology, lambda tgid: self._last_video.get(tgid, ""))
            return b""
        file_id = call.file
        self.files[file_id] = VideoFile(self.device, self._kinds[call.device], Caller(call.tgid, call.pid),
                                        wake=lambda: self.wake(file_id))
        self.nonblocking[file_id] = bool(call.event["flags"] & os.O_NONBLOCK)
        self._last_video[call.tgid] = call.device
        return b""

    def ioctl(self, call: Call) -> bytes:
        opened = self.files.get(call.file)
        if opened is None:
            raise OSError(errno.EBADF, "unknown file")
        caller = Caller(call.tgid, call.pid)
        if isinstance(opened, MediaFile):
            code, out = opened.ioctl(call.event["cmd"], call.argument, call.memory, caller)
        else:
            code, out = opened.ioctl(call.event["cmd"], call.argument, call.memory, caller,
                                     nonblocking=self.nonblocking[call.file])
            if call.event["cmd"] in _BUFFER_SETUP:
                call.reply["mappable"] = opened.regions()
        if code:
            # A failed ioctl copies nothing back, except the extended-control ones (error_idx).
            raise OutputError(code, out)
        return out

    def poll(self, call: Call) -> bytes:
        opened = self.files.get(call.file)
        if isinstance(opened, VideoFile):
            call.reply["revents"] = opened.poll()
            return b""
        return super().poll(call)  # a media device has no poll: DEFAULT_POLLMASK (media_poll())

    def release(self, call: Call) -> bytes:
        opened = self.files.pop(call.file, None)
        self.nonblocking.pop(call.file, None)
        if isinstance(opened, VideoFile):
            opened.release()
        return b""

    # -- lifetime -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        for file_id in list(self.files):
            opened = self.files.pop(file_id)
            if isinstance(opened, VideoFile):
                opened.release()
        try:
            self.device.remove()
        finally:
            self.close()


def _sysfs(subsystem: str, label: str) -> dict[str, str]:
    """The class device of a node: under the VPU's platform device, bound to amphion-vpu."""
    return {"subsystem": subsystem, "label": label, "parent": amphion.SYSFS_PARENT, "driver": amphion.DRIVER_NAME}
