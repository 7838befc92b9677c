"""The simulated driver's view of the outside world, over the memtrackfs socket.

``SocketMemTrack`` is the RFC's API (``vpu_sim.driver.memtrack.MemTrack``) as socket requests;
``HeapBacking`` allocates from one of the mount's DMA heaps (``dma_alloc``/``dma_free``), so the
driver's buffers show in the heap's usage and a small CMA area fails with ENOMEM as on a board.
(The caller's memory during a call is ``memtrackfs.driverkit.CallerMemory``.)
"""
from __future__ import annotations

import os
from typing import Any, Optional

from memtrackfs.client import MemtrackClient
from memtrackfs.mounts import find_socket
from vpu_sim.driver.memtrack import Caller, Handle, UsageCallback


def socket_path(mount: str) -> str:
    """The driver socket of the mount at ``mount``, as ``memtrackfs --mount`` finds it: the mount
    given wins over $MEMTRACKFS_SOCKET; the default, / (the real paths), is the run's own inside
    ``memtrackfs run`` ($MEMTRACKFS_SOCKET), else must be a memtrackfs mount."""
    if mount == "/" and os.environ.get("MEMTRACKFS_SOCKET"):
        return find_socket()
    return find_socket(mount)


class SocketMemTrack:
    def __init__(self, client: MemtrackClient) -> None:
        self.client = client
        self._watchers: dict[Handle, UsageCallback] = {}

    def create_root(self, name: str, caller: Caller) -> Handle:
        return self.client.call("root", name=name, tgid=caller.tgid, pid=caller.pid)["node"]

    def create_node(self, parent: Handle, name: Optional[str], caller: Caller) -> Handle:
        return self.client.call("node", parent=parent, name=name, tgid=caller.tgid, pid=caller.pid)["node"]

    def add(self, node: Handle, nbytes: int, name: Optional[str], caller: Caller) -> None:
        self.client.call("add", node=node, bytes=nbytes, name=name, tgid=caller.tgid, pid=caller.pid)

    def sub(self, node: Handle, nbytes: int, name: Optional[str]) -> None:
        self.client.call("sub", node=node, bytes=nbytes, name=name)

    def destroy(self, node: Handle) -> None:
        self.client.call("destroy", node=node)

    def watch(self, node: Handle, delay_ms: int, callback: UsageCallback) -> None:
        self._watchers[node] = callback
        self.client.call("delay", node=node, ms=delay_ms)
        self.client.call("watch", node=node)

    def unwatch(self, node: Handle) -> None:
        self._watchers.pop(node, None)
        self.client.call("unwatch", node=node)

    def deliver(self, event: dict[str, Any]) -> None:
        """A ``notify`` event from the socket (on the client's reader thread: only stores)."""
        callback = self._watchers.get(event["node"])
        if callback is not None:
            callback(event["bytes"])


class HeapAllocation:
    def __init__(self, client: MemtrackClient, allocation: int) -> None:
        self._client = client
        self.id = allocation

    def release(self) -> None:
        self._client.call("dma_free", allocation=self.id)


class HeapBacking:
    """Allocations from a heap of the mount (None: the board's CMA heap)."""

    def __init__(self, client: MemtrackClient, heap: Optional[str] = None) -> None:
        self._client = client
        self._heap = heap

    def allocate(self, nbytes: int) -> HeapAllocation:
        reply = self._client.call("dma_alloc", heap=self._heap, bytes=nbytes)
        return HeapAllocation(self._client, reply["allocation"])
