"""``vpu-sim daemon``: the simulated Amphion VPU driver, serving its video nodes on a mount.

It connects to the mount's socket as a driver whose state goes with it (``destroy_on_close``),
probes (``amphion-vpu`` root with the cores' ``fw``/``rpc``), registers the decoder and encoder
nodes, and serves each open file's ioctls with ``vpu_sim.driver.ioctls.VideoFile``. Every forwarded call
runs in its own thread: a blocking DQBUF must not hold up the others, and the socket's reader
thread must stay free to deliver the replies those calls wait for.
"""
from __future__ import annotations

import base64
import errno
import os
from typing import Any

from memtrackfs.client import MemtrackClient
from vpu_sim.driver.accounting import Memory
from vpu_sim.driver.amphion import CoreKind
from vpu_sim.driver.device import VpuDevice
from vpu_sim.driver.faults import NO_FAULTS, Faults
from vpu_sim.driver.forwarding import answer_in_thread, wait_until_stopped
from vpu_sim.driver.ioctls import VideoFile
from vpu_sim.driver.memtrack import Backing, Caller, MemoryArea
from vpu_sim.driver.remote import CallerMemory, HeapBacking, SocketMemTrack

# Where vb2's planes come from, per allocator (the 2009 videobuf allocator RFC's three kinds).
ALLOCATORS = ("dma-contig", "dma-sg", "vmalloc")
NODE_NAMES = {CoreKind.DECODER: "video0", CoreKind.ENCODER: "video1"}


class VpuDaemon:
    def __init__(self, socket_path: str, board: str = "imx8qxp", fps: float = 30.0,
                 allocator: str = "dma-contig", faults: Faults = NO_FAULTS) -> None:
        self.client = MemtrackClient(socket_path, client="vpu_sim", destroy_on_close=True,
                                     on_event=self._on_event)
        self.memtrack = SocketMemTrack(self.client)
        memory = Memory(self.memtrack, coherent=HeapBacking(self.client), planes=self._planes(allocator))
        pid = os.getpid()  # probe runs in the driver's own context, as at module load
        self.device = VpuDevice(memory, board, caller=Caller(pid, pid), fps=fps, faults=faults)
        self.files: dict[int, VideoFile] = {}
        self.nonblocking: dict[int, bool] = {}
        self._kinds = {name: kind for kind, name in NODE_NAMES.items()}
        for name in self._kinds:
            self.client.call("register_device", name=name)
        self.client.call("log", level=6, message=f"amphion-vpu: {board} probed, decoder dev/{NODE_NAMES[CoreKind.DECODER]}, "
                                                  f"encoder dev/{NODE_NAMES[CoreKind.ENCODER]}, {allocator} vb2 planes")
        if faults.specs:
            # Whoever reads the kernel log of a faulty run should learn that the faults were on purpose.
            self.client.call("log", level=4, message="amphion-vpu: injected faults: "
                                                      + " ".join(str(spec) for spec in faults.specs))

    def _planes(self, allocator: str) -> Backing:
        if allocator == "dma-contig":
            return HeapBacking(self.client)
        if allocator == "dma-sg":
            return HeapBacking(self.client, "system")
        return MemoryArea("vmalloc")  # vmalloc'd planes are no DMA memory: no heap sees them

    # -- forwarded file operations ------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("event") == "notify":
            self.memtrack.deliver(event)
        elif "call" in event:
            answer_in_thread(self.client, event, lambda e: getattr(self, "_" + e["event"])(e))

    def _open(self, event: dict[str, Any]) -> bytes:
        kind = self._kinds[event["device"]]
        self.files[event["file"]] = VideoFile(self.device, kind, Caller(event["tgid"], event["pid"]))
        self.nonblocking[event["file"]] = bool(event["flags"] & os.O_NONBLOCK)
        return b""

    def _ioctl(self, event: dict[str, Any]) -> bytes:
        video = self.files.get(event["file"])
        if video is None:
            raise OSError(errno.EBADF, "unknown file")
        memory = CallerMemory(self.client, event["call"])
        code, out = video.ioctl(event["cmd"], base64.b64decode(event["in"]), memory,
                                Caller(event["tgid"], event["pid"]),
                                nonblocking=self.nonblocking[event["file"]])
        if code:
            if out and event["arg"]:
                # FUSE copies nothing back on error; the extended-control ioctls still owe the
                # caller their error_idx, so write it into the caller's struct directly.
                memory.write(event["arg"], out)
            raise OSError(code, os.strerror(code))
        return out

    def _release(self, event: dict[str, Any]) -> bytes:
        video = self.files.pop(event["file"], None)
        self.nonblocking.pop(event["file"], None)
        if video is not None:
            video.release()
        return b""

    # -- lifetime -----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (clean removal) or until memtrackfs goes away."""
        if not wait_until_stopped(self.client):
            print("vpu-sim: memtrackfs closed the connection: exiting", flush=True)
            return 1
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        for file_id in list(self.files):
            self._release({"file": file_id})
        try:
            self.device.remove()
        finally:
            self.client.close()
