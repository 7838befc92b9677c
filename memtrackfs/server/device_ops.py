"""Socket operations of drivers that serve device nodes (see ``driver_endpoint``)."""
from __future__ import annotations

import base64
import binascii
import errno
from typing import Any, Callable

from memtrackfs.errors import KernelError
from memtrackfs.model.buffer_memory import MAPPABLE_SIZE, check_regions
from memtrackfs.model.kmsg import LEVEL_WARNING
from memtrackfs.server import fields
from memtrackfs.server.driver_endpoint import DriverEndpoint
from memtrackfs.server.session import Session
from memtrackfs.usermem import (
    MAX_COPY,
    copy_from_user,
    copy_to_user,
    read_mapping,
)

Reply = dict[str, Any]
MAX_USER_WRITES = 64  # per call: a multi-planar buffer's plane array and struct, a control array...


def _endpoint(session: Session) -> DriverEndpoint:
    if session.endpoint is None:
        raise KernelError(errno.EINVAL, "this connection serves no device node (register_device first)")
    return session.endpoint


def _call_id(request: dict[str, Any]) -> int:
    return fields.integer(request, "call", 1, 2**63 - 1)


def _base64(request: dict[str, Any], key: str) -> bytes:
    value = request.get(key, "")
    try:
        data = base64.b64decode(value, validate=True) if isinstance(value, str) else None
    except binascii.Error:
        data = None
    if data is None or len(data) > MAX_COPY:
        raise KernelError(errno.EINVAL, f"field {key!r} must be base64 of at most {MAX_COPY} bytes")
    return data


def _sysfs(request: dict[str, Any]) -> dict[str, str] | None:
    """The optional ``sysfs`` object: the node's class device (subsystem, label, parent, driver)."""
    sysfs = request.get("sysfs")
    if sysfs is None:
        return None
    keys = ("subsystem", "label", "parent", "driver")
    if not isinstance(sysfs, dict) or set(sysfs) != set(keys):
        raise KernelError(errno.EINVAL, f"sysfs must be an object with exactly {', '.join(keys)}")
    return {key: fields.name(sysfs, key) for key in keys}


def op_register_device(session: Session, request: dict[str, Any]) -> Reply:
    name = fields.name(request)
    sysfs = _sysfs(request)
    endpoint = session.endpoint or DriverEndpoint(session.client or f"pid {session.peer_pid}", session.push)
    with session.kernel.transaction() as k:
        endpoint.devices.append(k.devices.register(name, endpoint, sysfs))  # refused: nothing changed
        session.endpoint = endpoint
        k.log.info(f"memtrackfs: dev/{name} registered by {endpoint.name}")
    return {}


def _user_writes(request: dict[str, Any]) -> list[tuple[int, bytes]]:
    writes = request.get("user", [])
    if not isinstance(writes, list) or len(writes) > MAX_USER_WRITES:
        raise KernelError(errno.EINVAL, f"user must be a list of at most {MAX_USER_WRITES} {{addr, data}} objects")
    checked = []
    for write in writes:
        if not isinstance(write, dict):
            raise KernelError(errno.EINVAL, "each user write is {\"addr\": N, \"data\": base64}")
        checked.append((fields.integer(write, "addr", 0, 2**64 - 1), _base64(write, "data")))
    if sum(len(data) for _, data in checked) > MAX_COPY:
        raise KernelError(errno.EINVAL, f"the user writes of one call total at most {MAX_COPY} bytes")
    return checked


# Errnos that FUSE takes, whatever the file, for "this filesystem lacks the operation" and then
# never asks again for the whole mount (fs/fuse: ENOSYS on open sets fc->no_open, on flush
# no_flush, on poll no_poll, ...; docs/spec/fuse-errnos.md). One driver's answer for one of its
# files must never say that: the caller gets what the kernel itself makes of it for ioctls
# (ENOTTY), else EIO, and the kernel log says which driver misbehaved.
_CONNECTION_WIDE = {errno.ENOSYS}


def _fuse_safe(session: Session, endpoint: DriverEndpoint, call_id: int, result: Any) -> Any:
    if not result or getattr(errno, result) not in _CONNECTION_WIDE:
        return result
    event = endpoint.event_of(call_id)
    kind = event["event"]
    instead = "ENOTTY" if kind == "ioctl" else "EIO"
    if (kind, result) not in endpoint.warned:
        endpoint.warned.add((kind, result))
        with session.kernel.transaction() as k:
            k.log.emit(LEVEL_WARNING, f"memtrackfs: dev/{event.get('device')}: driver {endpoint.name} answered "
                                      f"{kind} with {result}, which FUSE would take as 'no {kind} on this mount': "
                                      f"{instead} instead")
    return instead


def op_complete(session: Session, request: dict[str, Any]) -> Reply:
    """The driver's answer to an open/ioctl/release: ``result`` 0 or an errno name, ``out`` bytes;
    ``user``: copy_to_user writes done in the caller before it is answered (a failing one makes
    the call EFAULT, as in the kernel); ``mappable``, when its buffers changed: the file's mmap
    regions from now on.

    ``late`` in the reply: its caller had given up waiting (ETIMEDOUT): its user writes are not
    done, and for an open the file is released at once (a ``release`` event follows)."""
    result = request.get("result", 0)
    if result != 0 and not (isinstance(result, str) and isinstance(getattr(errno, result, None), int)):
        raise KernelError(errno.EINVAL, f"result must be 0 or an errno name like 'EINVAL', got {result!r}")
    out = _base64(request, "out")
    writes = _user_writes(request)
    mappable = request.get("mappable")
    if mappable is not None:
        if not isinstance(mappable, list):
            raise KernelError(errno.EINVAL, "mappable must be a list of [offset, length] pairs")
        mappable = check_regions(mappable)
    endpoint = _endpoint(session)
    call_id = _call_id(request)
    result = _fuse_safe(session, endpoint, call_id, result)
    if writes:
        try:
            pid = endpoint.caller_pid(call_id)
        except KernelError:
            writes = []  # its caller is gone: nothing to write to
        try:
            for addr, data in writes:
                copy_to_user(pid, addr, data)
        except KernelError:
            result, out = "EFAULT", b""
    revents = fields.integer(request, "revents", 0, 0xFFFF, 0)
    if endpoint.complete(call_id, {"result": result, "out": out, "mappable": mappable, "revents": revents}):
        return {}
    return {"late": True}


def op_wake(session: Session, request: dict[str, Any]) -> Reply:
    """A driver's open file may answer poll differently now (a buffer is done, an event queued):
    its pollers are woken, and the kernel polls the file again."""
    fh = fields.integer(request, "file", 1, 2**63 - 1)
    _endpoint(session)
    for listener in session.kernel.file_wake_listeners:
        listener(fh)
    return {}


def op_copy_from_user(session: Session, request: dict[str, Any]) -> Reply:
    pid = _endpoint(session).caller_pid(_call_id(request))
    data = copy_from_user(pid, fields.integer(request, "addr", 0, 2**64 - 1),
                          fields.integer(request, "len", 0, MAX_COPY))
    return {"data": base64.b64encode(data).decode()}


def op_read_buffer(session: Session, request: dict[str, Any]) -> Reply:
    """A buffer's bytes at an mmap ``offset`` of the call's node, as the calling process's mapping
    holds them (a driver reading the bitstream an application queued); its written-back pages,
    or zeros, where that process maps nothing."""
    endpoint = _endpoint(session)
    call_id = _call_id(request)
    pid = endpoint.caller_pid(call_id)
    device = endpoint.call_device(call_id)
    offset = fields.integer(request, "offset", 0, MAPPABLE_SIZE - 1)
    length = fields.integer(request, "len", 0, MAX_COPY)
    data = read_mapping(pid, device.name, offset, length)
    if data is None:
        data = device.memory.read(offset, length) if length else b""
    return {"data": base64.b64encode(data).decode()}


def op_copy_to_user(session: Session, request: dict[str, Any]) -> Reply:
    pid = _endpoint(session).caller_pid(_call_id(request))
    copy_to_user(pid, fields.integer(request, "addr", 0, 2**64 - 1), _base64(request, "data"))
    return {}


def close_endpoint(session: Session) -> None:
    """The driver connection ended: fail its calls in flight and remove its device nodes."""
    endpoint = session.endpoint
    if endpoint is None:
        return
    endpoint.close()
    with session.kernel.transaction() as k:
        for node in endpoint.devices:
            k.devices.unregister(node)
            k.log.info(f"memtrackfs: dev/{node.name} removed: driver {endpoint.name} disconnected")


DEVICE_OPS: dict[str, Callable[[Session, dict[str, Any]], Reply]] = {
    "register_device": op_register_device,
    "complete": op_complete,
    "wake": op_wake,
    "copy_from_user": op_copy_from_user,
    "read_buffer": op_read_buffer,
    "copy_to_user": op_copy_to_user,
}
