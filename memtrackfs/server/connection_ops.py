"""Socket operations of any connection, whatever its area: the greeting and printk."""
from __future__ import annotations

import errno
import os
from typing import Any, Callable

from memtrackfs import __version__
from memtrackfs.errors import KernelError
from memtrackfs.kernel import Kernel
from memtrackfs.model.kmsg import LEVEL_INFO
from memtrackfs.server import fields
from memtrackfs.server.protocol import PROTOCOL_VERSION
from memtrackfs.server.session import Session

Reply = dict[str, Any]


def op_hello(session: Session, request: dict[str, Any]) -> Reply:
    if session.requests != 1:
        raise KernelError(errno.EINVAL, "hello must be the first request of a connection")
    client = fields.optional_name(request, "client") or ""
    destroy_on_close = fields.boolean(request, "destroy_on_close")
    if len(client) > 64 or not client.isprintable():
        raise KernelError(errno.EINVAL, "client must be a printable name of at most 64 characters")
    session.client, session.destroy_on_close = client, destroy_on_close
    if client:
        with session.kernel.transaction() as k:
            k.log.info(f"memtrackfs: driver {client} connected (pid {session.peer_pid})")
    return {"server": "memtrackfs", "version": __version__, "protocol": PROTOCOL_VERSION,
            "pid": os.getpid(), "destroy_on_close": destroy_on_close,
            "board": session.kernel.board.name, "bsp": session.kernel.board.bsp}


def op_log(session: Session, request: dict[str, Any]) -> Reply:
    level = fields.integer(request, "level", 0, 7, LEVEL_INFO)
    message = fields.name(request, "message")
    if len(message) > 1024 or any(0xD800 <= ord(ch) < 0xE000 for ch in message):
        # Anything else goes: dev/kmsg escapes it, as printk does; a lone surrogate has no bytes.
        raise KernelError(errno.EINVAL, "a log message is at most 1024 characters, with no lone surrogates")
    with session.kernel.transaction() as k:
        k.log.emit(level, message)
    return {}


def release_connection(session: Session, k: Kernel) -> None:
    """The connection ended (inside the closing transaction): say so, as a module unload would."""
    if session.client:
        k.log.info(f"memtrackfs: driver {session.client} disconnected (pid {session.peer_pid})")


CONNECTION_OPS: dict[str, Callable[[Session, dict[str, Any]], Reply]] = {
    "hello": op_hello,
    "log": op_log,
}
