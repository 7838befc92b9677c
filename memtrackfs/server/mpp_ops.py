"""Socket operations of a driver serving Rockchip's mpp_service (see ``model.mpp``).

The driver (vpu_sim's MPP service) tells the kernel what its files do: a session opened by a
thread, its client type, the dma-bufs each task's registers name (imported: attached to the
device and mapped), released fds, codec info, the cores' load, the session's end. The sessions
and their attachments belong to the driver's connection: if it goes, they go.

A register names a dma-buf by an fd of the calling process; here by the buffer's inode, which
that process (``tgid``) must hold a reference to, as only its own fds resolve in the kernel.
"""
from __future__ import annotations

import errno
from typing import Any, Callable

from memtrackfs.errors import KernelError
from memtrackfs.kernel import Kernel
from memtrackfs.model.mpp import MppService, MppSession
from memtrackfs.server import fields
from memtrackfs.server.fields import INT32_MAX
from memtrackfs.server.session import Session

Reply = dict[str, Any]
_ID_MAX = 2**63 - 1
MAX_TASK_BUFFERS = 256   # inodes one task may name (the kernel's mem_regions are fewer still)
MAX_CODEC_INFO = 16


def _service(kernel: Kernel) -> MppService:
    if kernel.mpp is None:
        raise KernelError(errno.ENODEV, f"board {kernel.board.name} has no mpp_service (mount with --board rk3588)")
    return kernel.mpp


def _session(session: Session, kernel: Kernel, request: dict[str, Any]) -> MppSession:
    return _service(kernel).session(fields.integer(request, "session", 1, _ID_MAX), session)


def _integers(request: dict[str, Any], key: str, limit: int, width: int) -> list[int]:
    values = request.get(key)
    if (not isinstance(values, list) or len(values) > limit
            or not all(type(v) is int and 0 <= v < 1 << width for v in values)):
        raise KernelError(errno.EINVAL, f"field {key!r} must be a list of at most {limit} integers of {width} bits")
    return values


def op_mpp_session_open(session: Session, request: dict[str, Any]) -> Reply:
    """open() of dev/mpp_service by thread ``pid`` of process ``tgid``."""
    pid = fields.integer(request, "pid", 1, INT32_MAX)
    tgid = fields.integer(request, "tgid", 1, INT32_MAX)
    with session.kernel.transaction() as k:
        return {"session": _service(k).open(pid, tgid, session).id}


def op_mpp_session_init(session: Session, request: dict[str, Any]) -> Reply:
    """MPP_CMD_INIT_CLIENT_TYPE: the device, and the session's index on it."""
    client_type = fields.integer(request, "client_type", 0, 2**32 - 1)
    with session.kernel.transaction() as k:
        mpp = _session(session, k, request)
        _service(k).init(mpp, client_type)
        assert mpp.device is not None
        return {"device": mpp.device.dev_name, "index": mpp.index, "hw_id": mpp.device.hw_id}


def op_mpp_import(session: Session, request: dict[str, Any]) -> Reply:
    """One task's fds: each buffer imported (or found) in the session; their IOVA and size."""
    inodes = _integers(request, "buffers", MAX_TASK_BUFFERS, 63)
    with session.kernel.transaction() as k:
        mpp = _session(session, k, request)
        for ino in dict.fromkeys(inodes):
            # dma_buf_get(fd) resolves only the caller's own fds.
            if not any(getattr(holder, "peer_pid", None) == mpp.tgid for holder in k.dmabufs.holders(ino)):
                raise KernelError(errno.EBADF, f"process {mpp.tgid} holds no dma-buf {ino}")
        mapped = _service(k).import_task(mpp, inodes)
    return {"buffers": [{"iova": iova, "size": size} for iova, size in mapped]}


def op_mpp_release_fd(session: Session, request: dict[str, Any]) -> Reply:
    ino = fields.integer(request, "buffer", 1, _ID_MAX)
    with session.kernel.transaction() as k:
        _service(k).release_fd(_session(session, k, request), ino)
    return {}


def op_mpp_reset(session: Session, request: dict[str, Any]) -> Reply:
    with session.kernel.transaction() as k:
        _service(k).reset(_session(session, k, request))
    return {}


def op_mpp_codec_info(session: Session, request: dict[str, Any]) -> Reply:
    """MPP_CMD_SEND_CODEC_INFO: ``items`` of [type, flag, data]."""
    items = request.get("items")
    if (not isinstance(items, list) or len(items) > MAX_CODEC_INFO
            or not all(isinstance(i, list) and len(i) == 3 and all(type(v) is int and 0 <= v < 2**64 for v in i)
                       for i in items)):
        raise KernelError(errno.EINVAL, f"field 'items' must be a list of at most {MAX_CODEC_INFO} [type, flag, data]")
    with session.kernel.transaction() as k:
        _service(k).set_codec_info(_session(session, k, request), [tuple(i) for i in items])
    return {}


def op_mpp_load(session: Session, request: dict[str, Any]) -> Reply:
    """A core's load and utilization over the last interval, in hundredths of a percent."""
    device = fields.name(request, "device")
    load = fields.integer(request, "load", 0, 10000)
    utilization = fields.integer(request, "utilization", 0, 10000)
    with session.kernel.transaction() as k:
        service = _service(k)
        if device not in service.board.load_cores:
            raise KernelError(errno.ENOENT, f"no mpp core {device!r}")
        service.load[device] = (load, utilization)
    return {}


def op_mpp_session_close(session: Session, request: dict[str, Any]) -> Reply:
    """release() of the session's file: its buffers are detached and let go."""
    with session.kernel.transaction() as k:
        _service(k).close(_session(session, k, request))
    return {}


def op_mpp_sessions(session: Session, request: dict[str, Any]) -> Reply:
    """Every session, in the service's order, with its buffers (least recently used first)."""
    k = session.kernel
    with k.lock:  # a read: no transaction (README Locking rule 1)
        service = _service(k)
        return {"sessions": [{"session": s.id, "pid": s.pid, "tgid": s.tgid, "index": s.index,
                              "device": s.device.dev_name if s.device else None,
                              "buffers": [{"buffer": b.ino, "iova": b.iova, "size": b.size}
                                          for b in (s.buffers or {}).values()]}
                             for s in service.sessions.values()],
                "timing_en": service.timing_en, "load_interval": service.load_interval}


def close_mpp_sessions(session: Session) -> None:
    """The driver connection ended: its sessions end with it (before its attachments go)."""
    kernel = session.kernel
    if kernel.mpp is None:
        return
    with kernel.transaction() as k:
        _service(k).close_holder(session)


MPP_OPS: dict[str, Callable[[Session, dict[str, Any]], Reply]] = {
    "mpp_session_open": op_mpp_session_open,
    "mpp_session_init": op_mpp_session_init,
    "mpp_import": op_mpp_import,
    "mpp_release_fd": op_mpp_release_fd,
    "mpp_reset": op_mpp_reset,
    "mpp_codec_info": op_mpp_codec_info,
    "mpp_load": op_mpp_load,
    "mpp_session_close": op_mpp_session_close,
    "mpp_sessions": op_mpp_sessions,
}
