"""An instance's V4L2 controls, with the control framework's rules (``v4l2-ctrls-core.c``,
``v4l2-ctrls-api.c``, ``v4l2-ctrls-defs.c`` of Linux 6.1).

Each class that has a control gets its class control ("User Controls", "Codec Controls"),
read-only and write-only, as ``handler_new_ref()`` adds it. Values out of range are rounded into
it (``ROUND_TO_RANGE``); a menu item out of range is ERANGE, a skipped one EINVAL; read-only
controls refuse writes and write-only ones reads with EACCES; 64-bit controls are invisible to
the old G_CTRL/S_CTRL (EINVAL). Extended-control requests name the failing control through
``error_idx`` exactly where the kernel does. A change of a control's value is reported to the
``on_change`` callback (the file's V4L2_EVENT_CTRL subscriptions).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from memtrackfs.errors import KernelError
from vpu_sim import uapi

INT64_MAX = (1 << 63) - 1
CLASS_NAMES = {uapi.V4L2_CTRL_CLASS_USER: "User Controls", uapi.V4L2_CTRL_CLASS_CODEC: "Codec Controls"}
_MENU_TYPES = (uapi.V4L2_CTRL_TYPE_MENU,)
_NO_RANGE_TYPES = (uapi.V4L2_CTRL_TYPE_BUTTON, uapi.V4L2_CTRL_TYPE_CTRL_CLASS)


class ControlError(KernelError):
    """A refused extended-control request; ``index`` is what the kernel puts in ``error_idx``."""

    def __init__(self, code: int, message: str, index: int) -> None:
        super().__init__(code, message)
        self.index = index


@dataclass
class Control:
    id: int
    name: str
    type: int
    minimum: int
    maximum: int
    step: int
    default: int
    flags: int = 0
    # Volatile controls read their value from the driver; the others keep what was set.
    read: Optional[Callable[[], int]] = None
    value: Optional[int] = None
    menu: Sequence[str] = ()     # menu item names by index (v4l2_ctrl_get_menu())
    skip_mask: int = 0           # menu items the driver does not support
    on_write: Optional[Callable[[int], None]] = None  # buttons: what pressing does

    @property
    def is_int(self) -> bool:
        """What G_CTRL/S_CTRL accept: every type but INTEGER64 (``ctrl->is_int``)."""
        return self.type != uapi.V4L2_CTRL_TYPE_INTEGER64

    @property
    def is_class(self) -> bool:
        return self.type == uapi.V4L2_CTRL_TYPE_CTRL_CLASS

    @property
    def current(self) -> int:
        if self.read is not None:
            return self.read()
        return self.default if self.value is None else self.value

    @property
    def reported_step(self) -> int:
        return 1 if self.type in _MENU_TYPES else self.step

    def validate(self, value: int) -> int:
        """std_validate(): the value the control would take, or KernelError."""
        if self.type in _NO_RANGE_TYPES:
            return 0
        if self.type == uapi.V4L2_CTRL_TYPE_BOOLEAN:
            return int(bool(value))
        if self.type in _MENU_TYPES:
            if not self.minimum <= value <= self.maximum:
                raise KernelError(errno.ERANGE, f"{self.name}: menu item {value} is out of range")
            if self.skip_mask & (1 << value) or not self.menu_name(value):
                raise KernelError(errno.EINVAL, f"{self.name}: menu item {value} is not supported")
            return value
        # ROUND_TO_RANGE
        if self.maximum >= 0 and value >= self.maximum - self.step // 2:
            value = self.maximum
        else:
            value += self.step // 2
        value = min(max(value, self.minimum), self.maximum)
        return self.minimum + (value - self.minimum) // self.step * self.step

    def menu_name(self, index: int) -> str:
        return self.menu[index] if 0 <= index < len(self.menu) else ""


def class_control(ctrl_class: int) -> Control:
    return Control(ctrl_class | 1, CLASS_NAMES[ctrl_class], uapi.V4L2_CTRL_TYPE_CTRL_CLASS, 0, 0, 0, 0,
                   uapi.V4L2_CTRL_FLAG_READ_ONLY | uapi.V4L2_CTRL_FLAG_WRITE_ONLY)


def min_buffers_control(ctrl_id: int, name: str, read: Callable[[], int]) -> Control:
    return Control(ctrl_id, name, uapi.V4L2_CTRL_TYPE_INTEGER, 1, 32, 1, 2,
                   uapi.V4L2_CTRL_FLAG_READ_ONLY | uapi.V4L2_CTRL_FLAG_VOLATILE, read=read)


def memory_usage_control(read: Callable[[], int]) -> Control:
    """The RFC's control: the instance subtree's total, as the last notification said."""
    return Control(uapi.V4L2_CID_MEMORY_USAGE, "Memory Usage", uapi.V4L2_CTRL_TYPE_INTEGER64, 0, INT64_MAX, 1, 0,
                   uapi.V4L2_CTRL_FLAG_READ_ONLY | uapi.V4L2_CTRL_FLAG_VOLATILE, read=read)


class Controls:
    def __init__(self, controls: Sequence[Control],
                 on_change: Callable[[Control, int], None] = lambda control, changes: None) -> None:
        classes = {uapi.ctrl_id2which(c.id) for c in controls}
        every = [*controls, *(class_control(ctrl_class) for ctrl_class in classes)]
        self._by_id = {control.id: control for control in sorted(every, key=lambda c: c.id)}
        self.on_change = on_change

    def __iter__(self):
        return iter(self._by_id.values())

    def lookup(self, ctrl_id: int) -> Optional[Control]:
        return self._by_id.get(ctrl_id)

    def find(self, ctrl_id: int) -> Control:
        control = self._by_id.get(ctrl_id)
        if control is None:
            raise KernelError(errno.EINVAL, f"no control {ctrl_id:#010x} on this device")
        return control

    def query(self, ctrl_id: int) -> Control:
        """QUERY_EXT_CTRL's lookup: with NEXT_CTRL the next ordinary control after the id, with
        NEXT_COMPOUND the next compound one (there are none), with both the next of either."""
        next_ctrl = bool(ctrl_id & uapi.V4L2_CTRL_FLAG_NEXT_CTRL)
        next_compound = bool(ctrl_id & uapi.V4L2_CTRL_FLAG_NEXT_COMPOUND)
        if not (next_ctrl or next_compound):
            return self.find(ctrl_id)
        after = ctrl_id & uapi.V4L2_CTRL_ID_MASK
        following = [c for c in self._by_id.values() if c.id > after] if next_ctrl else []
        if not following:
            raise KernelError(errno.EINVAL, f"no control after {after:#010x}")
        return following[0]

    def menu_item(self, ctrl_id: int, index: int) -> str:
        """QUERYMENU: the item's name, EINVAL for anything but a supported item of a menu."""
        control = self.find(ctrl_id)
        if control.type not in _MENU_TYPES or not control.minimum <= index <= control.maximum:
            raise KernelError(errno.EINVAL, f"{control.name} has no menu item {index}")
        if control.skip_mask & (1 << index) or not control.menu_name(index):
            raise KernelError(errno.EINVAL, f"{control.name}: menu item {index} is not supported")
        return control.menu_name(index)

    def _store(self, control: Control, value: int) -> None:
        if control.type == uapi.V4L2_CTRL_TYPE_BUTTON:
            if control.on_write is not None:
                control.on_write(value)
            return
        changed = control.current != value
        control.value = value
        if changed:
            self.on_change(control, uapi.V4L2_EVENT_CTRL_CH_VALUE)

    # -- VIDIOC_G_CTRL / VIDIOC_S_CTRL ----------------------------------------------------------

    def _int_control(self, ctrl_id: int) -> Control:
        control = self.find(ctrl_id)
        if not control.is_int:
            raise KernelError(errno.EINVAL, f"{control.name} is a 64-bit control: use VIDIOC_G/S_EXT_CTRLS")
        return control

    def get(self, ctrl_id: int) -> int:
        control = self._int_control(ctrl_id)
        if control.flags & uapi.V4L2_CTRL_FLAG_WRITE_ONLY:
            raise KernelError(errno.EACCES, f"{control.name} is write-only")
        return control.current

    def set(self, ctrl_id: int, value: int) -> int:
        control = self._int_control(ctrl_id)
        if control.flags & uapi.V4L2_CTRL_FLAG_READ_ONLY:
            raise KernelError(errno.EACCES, f"{control.name} is read-only")
        value = control.validate(value)
        self._store(control, value)
        return value

    # -- VIDIOC_G/S/TRY_EXT_CTRLS ----------------------------------------------------------------

    def _prepare(self, which: int, ids: Sequence[int]) -> list[Control]:
        """prepare_ext_ctrls(): every id must exist and belong to ``which`` when it names a class;
        the failing index goes in the error."""
        found = []
        for index, ctrl_id in enumerate(ids):
            if which not in (uapi.V4L2_CTRL_WHICH_CUR_VAL, uapi.V4L2_CTRL_WHICH_DEF_VAL) \
                    and uapi.ctrl_id2which(ctrl_id) != which:
                raise ControlError(errno.EINVAL, f"control {ctrl_id:#010x} is not of class {which:#010x}", index)
            control = self.lookup(ctrl_id)
            if control is None:
                raise ControlError(errno.EINVAL, f"no control {ctrl_id:#010x} on this device", index)
            found.append(control)
        return found

    def _class_check(self, which: int) -> None:
        """class_check(): a request of no control is fine unless it names a class without controls."""
        if which not in (uapi.V4L2_CTRL_WHICH_CUR_VAL, uapi.V4L2_CTRL_WHICH_DEF_VAL) \
                and (which | 1) not in self._by_id:
            raise ControlError(errno.EINVAL, f"no controls of class {which:#010x}", 0)

    def get_ext(self, which: int, ids: Sequence[int]) -> list[int]:
        """v4l2_g_ext_ctrls_common(): errors found before reading say error_idx = count."""
        count = len(ids)
        if which == uapi.V4L2_CTRL_WHICH_REQUEST_VAL:
            raise ControlError(errno.EINVAL, "this device has no media requests", count)
        if not ids:
            self._class_check(uapi.ctrl_id2which(which))
            return []
        try:
            controls = self._prepare(uapi.ctrl_id2which(which) if which != uapi.V4L2_CTRL_WHICH_DEF_VAL else which,
                                     ids)
        except ControlError as exc:
            raise ControlError(exc.errno, exc.message, count) from None
        for control in controls:
            if control.flags & uapi.V4L2_CTRL_FLAG_WRITE_ONLY:
                raise ControlError(errno.EACCES, f"{control.name} is write-only", count)
        if which == uapi.V4L2_CTRL_WHICH_DEF_VAL:
            return [control.default for control in controls]
        return [control.current for control in controls]

    def set_ext(self, which: int, values: Sequence[tuple[int, int]], *, apply: bool) -> list[int]:
        """try_set_ext_ctrls_common(): validate every value first, then (unless trying) set them
        all. A refusal names the failing control for TRY, and error_idx = count for S."""
        count = len(values)
        try:
            if which in (uapi.V4L2_CTRL_WHICH_DEF_VAL, uapi.V4L2_CTRL_WHICH_REQUEST_VAL):
                raise ControlError(errno.EINVAL, "default (or request) values cannot be set", count)
            which = uapi.ctrl_id2which(which)
            if not values:
                self._class_check(which)
                return []
            controls = self._prepare(which, [ctrl_id for ctrl_id, _ in values])
            adjusted = []
            for index, (control, (_, value)) in enumerate(zip(controls, values)):
                if control.flags & uapi.V4L2_CTRL_FLAG_READ_ONLY:
                    raise ControlError(errno.EACCES, f"{control.name} is read-only", index)
                try:
                    adjusted.append(control.validate(value))
                except ControlError:
                    raise
                except KernelError as exc:
                    raise ControlError(exc.errno, exc.message, index) from None
        except ControlError as exc:
            if apply:
                raise ControlError(exc.errno, exc.message, count) from None
            raise
        if apply:
            for control, value in zip(controls, adjusted):
                self._store(control, value)
        return adjusted
