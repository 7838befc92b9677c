"""The control, event and priority ioctls of a VPU node (``v4l2-ctrls-api.c``, ``v4l2-event.c``,
``v4l2-ioctl.c`` of Linux 6.1)."""
from __future__ import annotations

import ctypes
import errno
from typing import Callable

from memtrackfs.errors import KernelError
from vpu_sim import uapi
from vpu_sim.driver.amphion.controls import Control, ControlError
from vpu_sim.driver.amphion.instance import control_event
from vpu_sim.driver.amphion.ioctls import Call, IoctlError, load
from vpu_sim.driver.amphion.model import CoreKind


def _fill_query(q: uapi.v4l2_queryctrl | uapi.v4l2_query_ext_ctrl, control: Control) -> None:
    q.id = control.id
    q.type = control.type
    q.name = control.name.encode()
    q.flags = control.flags


def queryctrl(call: Call) -> bytes:
    q = load(uapi.v4l2_queryctrl, call.arg)
    control = call.instance.controls.query(q.id & ~uapi.V4L2_CTRL_FLAG_NEXT_COMPOUND)
    out = uapi.v4l2_queryctrl()
    _fill_query(out, control)
    # v4l2_queryctrl() reports no range for types the 32-bit struct cannot hold.
    if control.is_int and not control.is_class and control.type != uapi.V4L2_CTRL_TYPE_BUTTON:
        out.minimum, out.maximum = control.minimum, control.maximum
        out.step, out.default_value = control.reported_step, control.default
    return bytes(out)


def query_ext_ctrl(call: Call) -> bytes:
    q = load(uapi.v4l2_query_ext_ctrl, call.arg)
    control = call.instance.controls.query(q.id)
    out = uapi.v4l2_query_ext_ctrl(minimum=control.minimum, maximum=control.maximum, step=control.reported_step,
                                   default_value=control.default, elem_size=4 if control.is_int else 8, elems=1)
    _fill_query(out, control)
    return bytes(out)


def querymenu(call: Call) -> bytes:
    m = load(uapi.v4l2_querymenu, call.arg)
    name = call.instance.controls.menu_item(m.id, m.index)
    return bytes(uapi.v4l2_querymenu(id=m.id, index=m.index, name=name.encode()))


def g_ctrl(call: Call) -> bytes:
    c = load(uapi.v4l2_control, call.arg)
    c.value = call.instance.controls.get(c.id)
    return bytes(c)


def s_ctrl(call: Call) -> bytes:
    c = load(uapi.v4l2_control, call.arg)
    c.value = call.instance.controls.set(c.id, c.value)
    return bytes(c)


def _ext_ctrls(call: Call, run: Callable[[int, list[uapi.v4l2_ext_control]], list[int]]) -> bytes:
    """Shared by G/S/TRY_EXT_CTRLS: read the array, run, store values and error_idx back; the
    array and the struct go back to the caller even on error (INFO_FL_ALWAYS_COPY)."""
    c = load(uapi.v4l2_ext_controls, call.arg)
    if c.count > uapi.V4L2_CID_MAX_CTRLS:
        raise KernelError(errno.EINVAL, f"at most {uapi.V4L2_CID_MAX_CTRLS} controls per call, not {c.count}")
    size = ctypes.sizeof(uapi.v4l2_ext_control)
    data = call.user.read(c.controls, size * c.count) if c.count else b""
    items = [uapi.v4l2_ext_control.from_buffer_copy(data, i * size) for i in range(c.count)]
    c.reserved[0] = 0
    try:
        values = run(c.which, items)
    except ControlError as exc:
        c.error_idx = exc.index
        raise IoctlError(exc.errno, exc.message, bytes(c)) from None
    for item, value in zip(items, values):
        if call.instance.controls.find(item.id).is_int:
            item.value = value
        else:
            item.value64 = value
    c.error_idx = c.count
    if items:
        call.user.write(c.controls, b"".join(bytes(item) for item in items))
    return bytes(c)


def _value(call: Call, item: uapi.v4l2_ext_control) -> int:
    """The member of the value union the control's type uses (an unknown id fails later)."""
    control = call.instance.controls.lookup(item.id)
    return item.value64 if control is not None and not control.is_int else item.value


def g_ext_ctrls(call: Call) -> bytes:
    return _ext_ctrls(call, lambda which, items: call.instance.controls.get_ext(which, [item.id for item in items]))


def _set_ext_ctrls(call: Call, apply: bool) -> bytes:
    return _ext_ctrls(call, lambda which, items: call.instance.controls.set_ext(
        which, [(item.id, _value(call, item)) for item in items], apply=apply))


def s_ext_ctrls(call: Call) -> bytes:
    return _set_ext_ctrls(call, apply=True)


def try_ext_ctrls(call: Call) -> bytes:
    return _set_ext_ctrls(call, apply=False)


# -- events --------------------------------------------------------------------------------------

def subscribe_event(call: Call) -> bytes:
    """vdec_subscribe_event()/venc_subscribe_event(): EOS and CTRL; SOURCE_CHANGE on the decoder."""
    s = load(uapi.v4l2_event_subscription, call.arg)
    allowed = {uapi.V4L2_EVENT_EOS, uapi.V4L2_EVENT_CTRL}
    if call.file.kind is CoreKind.DECODER:
        allowed.add(uapi.V4L2_EVENT_SOURCE_CHANGE)
    if s.type not in allowed:
        raise KernelError(errno.EINVAL, f"event type {s.type} cannot be subscribed to on this device")
    controls = call.instance.controls

    def on_subscribe(event_type: int, event_id: int) -> None:
        if event_type != uapi.V4L2_EVENT_CTRL:
            return
        control = controls.find(event_id)  # v4l2_ctrl_add_event(): EINVAL for an unknown control
        if s.flags & uapi.V4L2_EVENT_SUB_FL_SEND_INITIAL and not control.is_class:
            changes = uapi.V4L2_EVENT_CTRL_CH_FLAGS
            if not control.flags & uapi.V4L2_CTRL_FLAG_WRITE_ONLY:
                changes |= uapi.V4L2_EVENT_CTRL_CH_VALUE
            call.file.events.queue(control_event(control, changes))

    call.file.events.subscribe(s.type, s.id, on_subscribe)
    return b""


def unsubscribe_event(call: Call) -> bytes:
    s = load(uapi.v4l2_event_subscription, call.arg)
    call.file.events.unsubscribe(s.type, s.id)
    return b""


def dqevent(call: Call) -> bytes:
    """The oldest pending event; ENOENT when none is pending. (A blocking DQEVENT would wait; FUSE
    does not say whether the caller set O_NONBLOCK later with fcntl, and clients loop on DQEVENT
    until it fails, so it never waits: README.)"""
    return bytes(call.file.events.dequeue())


# -- priority ------------------------------------------------------------------------------------

def g_priority(call: Call) -> bytes:
    return bytes(ctypes.c_uint32(call.file.priorities.maximum()))


def s_priority(call: Call) -> bytes:
    call.file.set_priority(load(ctypes.c_uint32, call.arg).value)
    return b""
