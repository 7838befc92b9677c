"""One driver connection's view of the kernel: the operations it may request, and what it owns.

Every operation checks its fields before taking the kernel lock, then acts in one transaction,
so a refused request changes nothing.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import os
from typing import Any, Callable, ContextManager

from memtrackfs import __version__
from memtrackfs.errors import KernelError
from memtrackfs.kernel import Kernel
from memtrackfs.model.heaps import Allocation
from memtrackfs.model.kmsg import LEVEL_INFO
from memtrackfs.model.tracker import SIZE_MAX, Node
from memtrackfs.processes import identify
from memtrackfs.server import fields
from memtrackfs.server.device_ops import DEVICE_OPS, close_endpoint
from memtrackfs.server.dmabuf_ops import DMABUF_OPS
from memtrackfs.server.driver_endpoint import DriverEndpoint
from memtrackfs.server.fields import INT32_MAX
from memtrackfs.server.mpp_ops import MPP_OPS, close_mpp_sessions
from memtrackfs.server.protocol import PROTOCOL_VERSION
from memtrackfs.server.settle_ops import SETTLE_OPS

Reply = dict[str, Any]
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
        self.watches: dict[Node, Callable[[Node, int], None]] = {}
        self.endpoint: DriverEndpoint | None = None  # set when it registers a device node
        self.allocations: dict[int, Allocation] = {}  # heap memory it took without a dma-buf
        self._requests = 0
        self._prune_at = 64
        # One int object per tgid/pid seen recently: JSON makes a new one per request, and a
        # million leaves would otherwise hold two each (56 bytes, two cache misses per line shown).
        self._ids: dict[int, int] = {}
        # While a request waits for other connections (settle), the server lets them be answered.
        self.waiting: Callable[[], ContextManager[None]] = contextlib.nullcontext
        # Its end releases what it holds: settle waits for that once its process has exited.
        holder = identify(peer_pid)
        with kernel.lock:
            self.file_key = kernel.files.open(f"socket connection of pid {peer_pid}", holder)

    def handle(self, request: dict[str, Any]) -> Reply:
        op = request.get("op")
        handler = _OPS.get(op) if isinstance(op, str) else None
        self._requests += 1
        if handler is None:
            raise KernelError(errno.ENOSYS, f"unknown op {op!r}; known ops: {', '.join(sorted(_OPS))}")
        return handler(self, request)

    # -- helpers ------------------------------------------------------------------------------

    def _context(self, request: dict[str, Any]) -> tuple[int, int]:
        """The caller's (tgid, pid): from the request, else the peer process (SO_PEERCRED)."""
        tgid = fields.integer(request, "tgid", 0, INT32_MAX, self.peer_pid)
        pid = fields.integer(request, "pid", 0, INT32_MAX, tgid if "tgid" in request else self.peer_pid)
        ids = self._ids
        if len(ids) >= 4096:
            ids.clear()
        return ids.setdefault(tgid, tgid), ids.setdefault(pid, pid)

    def _node(self, request: dict[str, Any], key: str = "node") -> Node:
        """Resolve a handle field; call inside the transaction."""
        return self.registry.node(fields.integer(request, key, 1, 2**63 - 1))

    def _own(self, node: Node) -> None:
        """Remember a node to destroy at close; drop dead ones now and then so memory stays flat."""
        if not self.destroy_on_close:
            return
        self.created.append(node)
        if len(self.created) >= self._prune_at:
            self.created = [n for n in self.created if n.alive]
            self._prune_at = max(64, 2 * len(self.created))

    # -- operations ---------------------------------------------------------------------------

    def op_hello(self, request: dict[str, Any]) -> Reply:
        if self._requests != 1:
            raise KernelError(errno.EINVAL, "hello must be the first request of a connection")
        client = fields.optional_name(request, "client") or ""
        destroy_on_close = fields.boolean(request, "destroy_on_close")
        if len(client) > 64 or not client.isprintable():
            raise KernelError(errno.EINVAL, "client must be a printable name of at most 64 characters")
        self.client, self.destroy_on_close = client, destroy_on_close
        if client:
            with self.kernel.transaction() as k:
                k.log.info(f"memtrackfs: driver {client} connected (pid {self.peer_pid})")
        return {"server": "memtrackfs", "version": __version__, "protocol": PROTOCOL_VERSION,
                "pid": os.getpid(), "destroy_on_close": destroy_on_close,
                "board": self.kernel.board.name, "bsp": self.kernel.board.bsp}

    def op_root(self, request: dict[str, Any]) -> Reply:
        name = fields.name(request)
        tgid, pid = self._context(request)
        with self.kernel.transaction() as k:
            node = k.tracker.create_root(name, tgid, pid)
            self._own(node)
            return {"node": self.registry.handle(node)}

    def op_node(self, request: dict[str, Any]) -> Reply:
        name = fields.optional_name(request)
        tgid, pid = self._context(request)
        with self.kernel.transaction() as k:
            node = k.tracker.create_node(self._node(request, "parent"), name, tgid, pid)
            self._own(node)
            return {"node": self.registry.handle(node)}

    def op_add(self, request: dict[str, Any]) -> Reply:
        nbytes = fields.integer(request, "bytes", 0, SIZE_MAX)
        name = fields.optional_name(request)
        tgid, pid = self._context(request)
        with self.kernel.transaction() as k:
            k.tracker.add(self._node(request), nbytes, name, tgid, pid)
        return {}

    def op_sub(self, request: dict[str, Any]) -> Reply:
        nbytes = fields.integer(request, "bytes", 0, SIZE_MAX)
        name = fields.optional_name(request)
        with self.kernel.transaction() as k:
            k.tracker.sub(self._node(request), nbytes, name)
        return {}

    def op_set(self, request: dict[str, Any]) -> Reply:
        nbytes = fields.integer(request, "bytes", 0, SIZE_MAX)
        with self.kernel.transaction() as k:
            k.tracker.set(self._node(request), nbytes)
        return {}

    def op_read(self, request: dict[str, Any]) -> Reply:
        with self.kernel.transaction() as k:
            return {"bytes": k.tracker.read(self._node(request))}

    def op_destroy(self, request: dict[str, Any]) -> Reply:
        with self.kernel.transaction() as k:
            dead = k.tracker.destroy(self._node(request))
            self.registry.forget(dead)
            for node in dead:
                self.watches.pop(node, None)
        return {}

    def op_delay(self, request: dict[str, Any]) -> Reply:
        delay_ms = fields.integer(request, "ms", -INT32_MAX - 1, INT32_MAX)
        with self.kernel.transaction() as k:
            k.tracker.set_notify_delay(self._node(request), delay_ms)
        return {}

    def op_watch(self, request: dict[str, Any]) -> Reply:
        with self.kernel.transaction() as k:
            node = self._node(request)
            handle = self.registry.handle(node)
            push = self.push

            def notify(_node: Node, usage: int) -> None:
                push({"event": "notify", "node": handle, "bytes": usage})

            k.tracker.register_notify(node, notify)
            self.watches[node] = notify
        return {}

    def op_unwatch(self, request: dict[str, Any]) -> Reply:
        with self.kernel.transaction() as k:
            node = self._node(request)
            callback = self.watches.pop(node, None)
            if callback is None or node.notify is not callback:
                raise KernelError(errno.EINVAL, "this connection does not watch that node")
            k.tracker.unregister_notify(node)
        return {}

    def op_roots(self, request: dict[str, Any]) -> Reply:
        with self.kernel.transaction() as k:
            return {"roots": [{"name": name, "node": self.registry.handle(root)}
                              for name, root in k.tracker.roots.items()]}

    def op_log(self, request: dict[str, Any]) -> Reply:
        level = fields.integer(request, "level", 0, 7, LEVEL_INFO)
        message = fields.name(request, "message")
        if len(message) > 1024 or any(0xD800 <= ord(ch) < 0xE000 for ch in message):
            # Anything else goes: dev/kmsg escapes it, as printk does; a lone surrogate has no bytes.
            raise KernelError(errno.EINVAL, "a log message is at most 1024 characters, with no lone surrogates")
        with self.kernel.transaction() as k:
            k.log.emit(level, message)
        return {}

    # -- end of the connection ----------------------------------------------------------------

    def close(self) -> None:
        """The peer is gone: its device nodes go, its watches drop; what it made too if it asked."""
        close_endpoint(self)
        close_mpp_sessions(self)
        with self.kernel.transaction() as k:
            for node, callback in self.watches.items():
                if node.notify is callback:
                    k.tracker.unregister_notify(node)
            self.watches.clear()
            # Its dma-buf references go as a dead process's fds close: unreferenced buffers are released.
            k.dmabufs.release_holder(self)
            for allocation in self.allocations.values():
                allocation.release()
            self.allocations.clear()
            if self.destroy_on_close:
                for node in self.created:
                    if node.alive:
                        self.registry.forget(k.tracker.destroy(node))
            self.created.clear()
            if self.client:
                k.log.info(f"memtrackfs: driver {self.client} disconnected (pid {self.peer_pid})")
        self.kernel.close_file(self.file_key)


_OPS: dict[str, Callable[[Session, dict[str, Any]], Reply]] = {
    name[3:]: method for name, method in vars(Session).items() if name.startswith("op_")
}
_OPS.update(DEVICE_OPS)
_OPS.update(DMABUF_OPS)
_OPS.update(MPP_OPS)
_OPS.update(SETTLE_OPS)
