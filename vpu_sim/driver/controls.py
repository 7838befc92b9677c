"""An instance's V4L2 controls, with the control framework's rules (``v4l2-ctrls-api.c``).

Integer values out of range are clamped to it, as ``ROUND_TO_RANGE`` does; read-only controls
refuse writes with EACCES; 64-bit controls are invisible to the old G_CTRL/S_CTRL (EINVAL);
extended-control requests name the failing control through ``error_idx``.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from memtrackfs.errors import KernelError
from vpu_sim import uapi

INT64_MAX = (1 << 63) - 1


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

    @property
    def is_int(self) -> bool:
        """What G_CTRL/S_CTRL accept: every integer type except INTEGER64."""
        return self.type != uapi.V4L2_CTRL_TYPE_INTEGER64

    @property
    def current(self) -> int:
        if self.read is not None:
            return self.read()
        return self.default if self.value is None else self.value

    def round_to_range(self, value: int) -> int:
        value = min(max(value, self.minimum), self.maximum)
        return self.minimum + (value - self.minimum) // self.step * self.step


def min_buffers_control(ctrl_id: int, name: str, read: Callable[[], int]) -> Control:
    return Control(ctrl_id, name, uapi.V4L2_CTRL_TYPE_INTEGER, 1, 32, 1, 2,
                   uapi.V4L2_CTRL_FLAG_READ_ONLY | uapi.V4L2_CTRL_FLAG_VOLATILE, read=read)


def memory_usage_control(read: Callable[[], int]) -> Control:
    """The RFC's control: the instance subtree's total, as the last notification said."""
    return Control(uapi.V4L2_CID_MEMORY_USAGE, "Memory Usage", uapi.V4L2_CTRL_TYPE_INTEGER64, 0, INT64_MAX, 1, 0,
                   uapi.V4L2_CTRL_FLAG_READ_ONLY | uapi.V4L2_CTRL_FLAG_VOLATILE, read=read)


class Controls:
    def __init__(self, controls: Sequence[Control]) -> None:
        self._by_id = {control.id: control for control in sorted(controls, key=lambda c: c.id)}

    def lookup(self, ctrl_id: int) -> Optional[Control]:
        return self._by_id.get(ctrl_id)

    def find(self, ctrl_id: int) -> Control:
        control = self._by_id.get(ctrl_id)
        if control is None:
            raise KernelError(errno.EINVAL, f"no control {ctrl_id:#010x} on this device")
        return control

    def query(self, ctrl_id: int) -> Control:
        """QUERYCTRL's lookup: with NEXT_CTRL (or NEXT_COMPOUND), the first control after the id."""
        if ctrl_id & (uapi.V4L2_CTRL_FLAG_NEXT_CTRL | uapi.V4L2_CTRL_FLAG_NEXT_COMPOUND):
            after = ctrl_id & uapi.V4L2_CTRL_ID_MASK
            following = [c for c in self._by_id.values() if c.id > after]
            if not following:
                raise KernelError(errno.EINVAL, f"no control after {after:#010x}")
            return following[0]
        return self.find(ctrl_id)

    # -- VIDIOC_G_CTRL / VIDIOC_S_CTRL ----------------------------------------------------------

    def _int_control(self, ctrl_id: int) -> Control:
        control = self.find(ctrl_id)
        if not control.is_int:
            raise KernelError(errno.EINVAL, f"{control.name} is a 64-bit control: use VIDIOC_G/S_EXT_CTRLS")
        return control

    def get(self, ctrl_id: int) -> int:
        return self._int_control(ctrl_id).current

    def set(self, ctrl_id: int, value: int) -> int:
        control = self._int_control(ctrl_id)
        if control.flags & uapi.V4L2_CTRL_FLAG_READ_ONLY:
            raise KernelError(errno.EACCES, f"{control.name} is read-only")
        control.value = control.round_to_range(value)
        return control.value

    # -- VIDIOC_G/S/TRY_EXT_CTRLS ----------------------------------------------------------------

    def _prepare(self, which: int, ids: Sequence[int]) -> list[Control]:
        """prepare_ext_ctrls(): every id must exist and belong to ``which`` when it names a class."""
        if which == uapi.V4L2_CTRL_WHICH_REQUEST_VAL:
            raise ControlError(errno.EINVAL, "this device has no media requests", len(ids))
        if not ids and which not in (uapi.V4L2_CTRL_WHICH_CUR_VAL, uapi.V4L2_CTRL_WHICH_DEF_VAL):
            if not any(uapi.ctrl_id2which(c.id) == which for c in self._by_id.values()):
                raise ControlError(errno.EINVAL, f"no controls of class {which:#010x}", 0)
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

    def get_ext(self, which: int, ids: Sequence[int]) -> list[int]:
        controls = self._prepare(which, ids)
        if which == uapi.V4L2_CTRL_WHICH_DEF_VAL:
            return [control.default for control in controls]
        return [control.current for control in controls]

    def set_ext(self, which: int, values: Sequence[tuple[int, int]], *, apply: bool) -> list[int]:
        """Validate every value first, then (unless trying) set them all: all or nothing."""
        if which == uapi.V4L2_CTRL_WHICH_DEF_VAL:
            raise ControlError(errno.EINVAL, "default values cannot be set", len(values))
        controls = self._prepare(which, [ctrl_id for ctrl_id, _ in values])
        adjusted = []
        for index, (control, (_, value)) in enumerate(zip(controls, values)):
            if control.flags & uapi.V4L2_CTRL_FLAG_READ_ONLY:
                raise ControlError(errno.EACCES, f"{control.name} is read-only", index)
            adjusted.append(control.round_to_range(value))
        if apply:
            for control, value in zip(controls, adjusted):
                control.value = value
        return adjusted
