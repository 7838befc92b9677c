"""``settle``: wait until the releases of processes that have exited have been processed.

The socket's form of ``udevadm settle``: a test that ran an application and waited for it can
settle before it looks at the tree, since the kernel sends a device file's release in the
background and the driver frees its instance only then (see ``model.files``).
"""
from __future__ import annotations

import errno
from typing import Any, Callable

from memtrackfs.errors import KernelError
from memtrackfs.model.files import FileRecord
from memtrackfs.server import fields
from memtrackfs.server.session import Session

Reply = dict[str, Any]
MAX_TIMEOUT_MS = 3_600_000
DEFAULT_TIMEOUT_MS = 10_000


def _pending(entry: FileRecord) -> str:
    opener = entry.holders[0]
    who = f"pid {opener.tgid}" if opener is not None else "a process"
    if entry.what.startswith("socket connection"):
        return f"{entry.what} (exited): its end is not processed yet"
    state = ("its release is at the driver" if entry.releasing
             else "the kernel has not sent its release (does another process still hold it?)")
    return f"{entry.what} opened by {who} (exited): {state}"


def op_settle(session: Session, request: dict[str, Any]) -> Reply:
    """Return once no open device file or connection is held only by exited processes;
    ETIMEDOUT naming what is still pending after ``timeout_ms``."""
    timeout_ms = fields.integer(request, "timeout_ms", 0, MAX_TIMEOUT_MS, DEFAULT_TIMEOUT_MS)
    with session.waiting():  # the drivers' answers to those releases come on other connections
        pending = session.kernel.settle(timeout_ms / 1000)
    if pending:
        raise KernelError(errno.ETIMEDOUT, f"not settled after {timeout_ms / 1000:g} s: "
                                           + "; ".join(_pending(entry) for entry in pending))
    return {}


SETTLE_OPS: dict[str, Callable[[Session, dict[str, Any]], Reply]] = {"settle": op_settle}
