"""Checks on request fields: each returns the value or raises KernelError(EINVAL), clearly."""
from __future__ import annotations

import errno
from typing import Any, Optional

from memtrackfs.errors import KernelError

INT32_MAX = 2**31 - 1
_REQUIRED = object()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def integer(request: dict[str, Any], key: str, lo: int, hi: int, default: Any = _REQUIRED) -> int:
    value = request.get(key, default)
    if value is _REQUIRED:
        raise KernelError(errno.EINVAL, f"field {key!r} is required")
    if type(value) is not int or not lo <= value <= hi:
        raise KernelError(errno.EINVAL, f"field {key!r} must be an integer in {lo}..{hi}, got {_shown(value)}")
    return value


def optional_name(request: dict[str, Any], key: str = "name") -> Optional[str]:
    value = request.get(key)
    if value is not None and not isinstance(value, str):
        raise KernelError(errno.EINVAL, f"field {key!r} must be a string or null, got {_shown(value)}")
    return value


def name(request: dict[str, Any], key: str = "name") -> str:
    value = optional_name(request, key)
    if value is None:
        raise KernelError(errno.EINVAL, f"field {key!r} is required")
    return value


def boolean(request: dict[str, Any], key: str, default: bool = False) -> bool:
    value = request.get(key, default)
    if type(value) is not bool:
        raise KernelError(errno.EINVAL, f"field {key!r} must be true or false, got {_shown(value)}")
    return value
