"""One connection's state: its peer, its greeting, what it created, holds and watches.

The operations a connection may request are declared per area (``connection_ops``,
``tracker_ops``, ``dmabuf_ops``, ``device_ops``) and dispatched by ``ops``; a ``Session`` only
holds what they share about the connection.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
from typing import Any, Callable, ContextManager

from memtrackfs.errors import KernelError
from memtrackfs.kernel import Kernel
from memtrackfs.model.heaps import Allocation
from memtrackfs.model.tracker import Node
from memtrackfs.processes import identify
from memtrackfs.server import fields
from memtrackfs.server.driver_endpoint import DriverEndpoint
from memtrackfs.server.fields import INT32_MAX

Push = Callable[[dict[str, Any]], None]


class HandleRegistry:
    """The integer handles that name tracker nodes on the socket. Guarded by ``Kernel.lock``."""

    def __init__(self) -> None:
        self._nodes: dict[int, Node] = {}
        self._handles: dict[Node, int] = {}
        self._next = itertools.count(1)

    def handle(self, node: Node) -> int:
        handle = self._handles.get(node)
        if handle is None:
            handle = next(self._next)
            self._nodes[handle] = node
            self._handles[node] = handle
        return handle

    def node(self, handle: int) -> Node:
        node = self._nodes.get(handle)
        if node is None:
            raise KernelError(errno.ENOENT, f"no live node has handle {handle}")
        return node

    def forget(self, nodes: list[Node]) -> None:
        for node in nodes:
            handle = self._handles.pop(node, None)
            if handle is not None:
                del self._nodes[handle]


class Session:
    """The state of one connection: its peer, its greeting, what it created and watches."""

    def __init__(self, kernel: Kernel, registry: HandleRegistry, peer_pid: int, push: Push) -> None:
        self.kernel = kernel
        self.registry = registry
        self.peer_pid = peer_pid
        self.push = push
        self.client = ""
        self.destroy_on_close = False
        self.created: list[Node] = []
        self.prune_at = 64  # when to drop dead nodes from ``created`` next (tracker_ops.own)
        self.watches: dict[Node, Callable[[Node, int], None]] = {}
        self.endpoint: DriverEndpoint | None = None  # set when it registers a device node
        self.allocations: dict[int, Allocation] = {}  # heap memory it took without a dma-buf
        self.requests = 0
        # One int object per tgid/pid seen recently: JSON makes a new one per request, and a
        # million leaves would otherwise hold two each (56 bytes, two cache misses per line shown).
        self.ids: dict[int, int] = {}
        # While a request waits for other connections (settle), the server lets them be answered.
        self.waiting: Callable[[], ContextManager[None]] = contextlib.nullcontext
        # Its end releases what it holds: settle waits for that once its process has exited.
        holder = identify(peer_pid)
        with kernel.lock:
            self.file_key = kernel.files.open(f"socket connection of pid {peer_pid}", holder)


def caller_context(session: Session, request: dict[str, Any]) -> tuple[int, int]:
    """The caller's (tgid, pid): from the request, else the peer process (SO_PEERCRED)."""
    tgid = fields.integer(request, "tgid", 0, INT32_MAX, session.peer_pid)
    pid = fields.integer(request, "pid", 0, INT32_MAX, tgid if "tgid" in request else session.peer_pid)
    ids = session.ids
    if len(ids) >= 4096:
        ids.clear()
    return ids.setdefault(tgid, tgid), ids.setdefault(pid, pid)
