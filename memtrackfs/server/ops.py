"""Every socket operation, by name: the tables each area declares, and the end of a connection."""
from __future__ import annotations

import errno
from typing import Any, Callable

from memtrackfs.errors import KernelError
from memtrackfs.server.connection_ops import CONNECTION_OPS, release_connection
from memtrackfs.server.device_ops import DEVICE_OPS, close_endpoint
from memtrackfs.server.dmabuf_ops import DMABUF_OPS, release_dmabufs
from memtrackfs.server.mpp_ops import MPP_OPS, close_mpp_sessions
from memtrackfs.server.session import Session
from memtrackfs.server.settle_ops import SETTLE_OPS
from memtrackfs.server.tracker_ops import TRACKER_OPS, release_tracker

Reply = dict[str, Any]
Operation = Callable[[Session, dict[str, Any]], Reply]


def _merge(*tables: dict[str, Operation]) -> dict[str, Operation]:
    merged: dict[str, Operation] = {}
    for table in tables:
        clash = merged.keys() & table.keys()
        if clash:
            raise ValueError(f"socket operations declared twice: {sorted(clash)}")
        merged.update(table)
    return merged


OPS = _merge(CONNECTION_OPS, TRACKER_OPS, DMABUF_OPS, DEVICE_OPS, MPP_OPS, SETTLE_OPS)


def handle(session: Session, request: dict[str, Any]) -> Reply:
    """Answer one decoded request of this connection (KernelError if refused)."""
    op = request.get("op")
    operation = OPS.get(op) if isinstance(op, str) else None
    session.requests += 1
    if operation is None:
        raise KernelError(errno.ENOSYS, f"unknown op {op!r}; known ops: {', '.join(sorted(OPS))}")
    return operation(session, request)


def close(session: Session) -> None:
    """The peer is gone: its device nodes go, its mpp_service sessions end, then, in one
    transaction, its watches, references, allocations and (if it asked) what it made, as a dead
    process's fds close."""
    close_endpoint(session)
    close_mpp_sessions(session)
    with session.kernel.transaction() as k:
        release_tracker(session, k)
        release_dmabufs(session, k)
        release_connection(session, k)
    session.kernel.close_file(session.file_key)  # what settle waits for: this connection's end
