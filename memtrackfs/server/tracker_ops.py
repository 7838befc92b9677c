"""Socket operations on the v4l2-memtrack tracker (the RFC's API; see ``model.tracker``).

Every operation checks its fields before taking the kernel lock, then acts in one transaction,
so a refused request changes nothing.
"""
from __future__ import annotations

import errno
from typing import Any, Callable

from memtrackfs.errors import KernelError
from memtrackfs.kernel import Kernel
from memtrackfs.model.tracker import SIZE_MAX, Node
from memtrackfs.server import fields
from memtrackfs.server.fields import INT32_MAX
from memtrackfs.server.session import Session, caller_context

Reply = dict[str, Any]


def _node(session: Session, request: dict[str, Any], key: str = "node") -> Node:
    """Resolve a handle field; call inside the transaction."""
    return session.registry.node(fields.integer(request, key, 1, 2**63 - 1))


def _own(session: Session, node: Node) -> None:
    """Remember a node to destroy at close; drop dead ones now and then so memory stays flat."""
    if not session.destroy_on_close:
        return
    session.created.append(node)
    if len(session.created) >= session.prune_at:
        session.created = [n for n in session.created if n.alive]
        session.prune_at = max(64, 2 * len(session.created))


def op_root(session: Session, request: dict[str, Any]) -> Reply:
    name = fields.name(request)
    tgid, pid = caller_context(session, request)
    with session.kernel.transaction() as k:
        node = k.tracker.create_root(name, tgid, pid)
        _own(session, node)
        return {"node": session.registry.handle(node)}


def op_node(session: Session, request: dict[str, Any]) -> Reply:
    name = fields.optional_name(request)
    tgid, pid = caller_context(session, request)
    with session.kernel.transaction() as k:
        node = k.tracker.create_node(_node(session, request, "parent"), name, tgid, pid)
        _own(session, node)
        return {"node": session.registry.handle(node)}


def op_add(session: Session, request: dict[str, Any]) -> Reply:
    nbytes = fields.integer(request, "bytes", 0, SIZE_MAX)
    name = fields.optional_name(request)
    tgid, pid = caller_context(session, request)
    with session.kernel.transaction() as k:
        k.tracker.add(_node(session, request), nbytes, name, tgid, pid)
    return {}


def op_sub(session: Session, request: dict[str, Any]) -> Reply:
    nbytes = fields.integer(request, "bytes", 0, SIZE_MAX)
    name = fields.optional_name(request)
    with session.kernel.transaction() as k:
        k.tracker.sub(_node(session, request), nbytes, name)
    return {}


def op_set(session: Session, request: dict[str, Any]) -> Reply:
    nbytes = fields.integer(request, "bytes", 0, SIZE_MAX)
    with session.kernel.transaction() as k:
        k.tracker.set(_node(session, request), nbytes)
    return {}


def op_read(session: Session, request: dict[str, Any]) -> Reply:
    k = session.kernel
    with k.lock:  # a read: no transaction (README Locking rule 1)
        return {"bytes": k.tracker.read(_node(session, request))}


def op_destroy(session: Session, request: dict[str, Any]) -> Reply:
    with session.kernel.transaction() as k:
        dead = k.tracker.destroy(_node(session, request))
        session.registry.forget(dead)
        for node in dead:
            session.watches.pop(node, None)
    return {}


def op_delay(session: Session, request: dict[str, Any]) -> Reply:
    delay_ms = fields.integer(request, "ms", -INT32_MAX - 1, INT32_MAX)
    with session.kernel.transaction() as k:
        k.tracker.set_notify_delay(_node(session, request), delay_ms)
    return {}


def op_watch(session: Session, request: dict[str, Any]) -> Reply:
    with session.kernel.transaction() as k:
        node = _node(session, request)
        handle = session.registry.handle(node)
        push = session.push

        def notify(_node: Node, usage: int) -> None:
            push({"event": "notify", "node": handle, "bytes": usage})

        k.tracker.register_notify(node, notify)
        session.watches[node] = notify
    return {}


def op_unwatch(session: Session, request: dict[str, Any]) -> Reply:
    with session.kernel.transaction() as k:
        node = _node(session, request)
        callback = session.watches.pop(node, None)
        if callback is None or node.notify is not callback:
            raise KernelError(errno.EINVAL, "this connection does not watch that node")
        k.tracker.unregister_notify(node)
    return {}


def op_roots(session: Session, request: dict[str, Any]) -> Reply:
    k = session.kernel
    with k.lock:  # a read: no transaction (README Locking rule 1)
        return {"roots": [{"name": name, "node": session.registry.handle(root)}
                          for name, root in k.tracker.roots.items()]}


def release_tracker(session: Session, k: Kernel) -> None:
    """The connection ended (inside the closing transaction): its watches drop; what it made
    goes too if it asked (``destroy_on_close``), as a driver's state goes with its module."""
    for node, callback in session.watches.items():
        if node.notify is callback:
            k.tracker.unregister_notify(node)
    session.watches.clear()
    if session.destroy_on_close:
        for node in session.created:
            if node.alive:
                session.registry.forget(k.tracker.destroy(node))
    session.created.clear()


TRACKER_OPS: dict[str, Callable[[Session, dict[str, Any]], Reply]] = {
    "root": op_root,
    "node": op_node,
    "add": op_add,
    "sub": op_sub,
    "set": op_set,
    "read": op_read,
    "destroy": op_destroy,
    "delay": op_delay,
    "watch": op_watch,
    "unwatch": op_unwatch,
    "roots": op_roots,
}
