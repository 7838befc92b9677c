"""Socket operations of drivers that serve device nodes (see ``driver_endpoint``)."""
from __future__ import annotations

import base64
import binascii
import errno
from typing import TYPE_CHECKING, Any

from memtrackfs.errors import KernelError
from memtrackfs.server import fields
from memtrackfs.server.driver_endpoint import DriverEndpoint
from memtrackfs.server.usermem import MAX_COPY, copy_from_user, copy_to_user

if TYPE_CHECKING:
    from memtrackfs.server.session import Session

Reply = dict[str, Any]


def _endpoint(session: "Session") -> DriverEndpoint:
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


def op_register_device(session: "Session", request: dict[str, Any]) -> Reply:
    name = fields.name(request)
    endpoint = session.endpoint or DriverEndpoint(session.client or f"pid {session.peer_pid}", session.push)
    with session.kernel.transaction() as k:
        endpoint.devices.append(k.devices.register(name, endpoint))  # refused: nothing changed
        session.endpoint = endpoint
        k.log.info(f"memtrackfs: dev/{name} registered by {endpoint.name}")
    return {}


def op_complete(session: "Session", request: dict[str, Any]) -> Reply:
    """The driver's answer to an open/ioctl/release: ``result`` 0 or an errno name, ``out`` bytes."""
    result = request.get("result", 0)
    if result != 0 and not (isinstance(result, str) and isinstance(getattr(errno, result, None), int)):
        raise KernelError(errno.EINVAL, f"result must be 0 or an errno name like 'EINVAL', got {result!r}")
    out = _base64(request, "out")
    _endpoint(session).complete(_call_id(request), {"result": result, "out": out})
    return {}


def op_copy_from_user(session: "Session", request: dict[str, Any]) -> Reply:
    pid = _endpoint(session).caller_pid(_call_id(request))
    data = copy_from_user(pid, fields.integer(request, "addr", 0, 2**64 - 1),
                          fields.integer(request, "len", 0, MAX_COPY))
    return {"data": base64.b64encode(data).decode()}


def op_copy_to_user(session: "Session", request: dict[str, Any]) -> Reply:
    pid = _endpoint(session).caller_pid(_call_id(request))
    copy_to_user(pid, fields.integer(request, "addr", 0, 2**64 - 1), _base64(request, "data"))
    return {}


def close_endpoint(session: "Session") -> None:
    """The driver connection ended: fail its calls in flight and remove its device nodes."""
    endpoint = session.endpoint
    if endpoint is None:
        return
    endpoint.close()
    with session.kernel.transaction() as k:
        for node in endpoint.devices:
            k.devices.unregister(node)
            k.log.info(f"memtrackfs: dev/{node.name} removed: driver {endpoint.name} disconnected")


DEVICE_OPS = {name[3:]: fn for name, fn in dict(globals()).items() if name.startswith("op_")}
