"""copy_from_user / copy_to_user for forwarded ioctls: the caller's memory, by pid.

FUSE passes an ioctl's fixed-size argument, but not what its pointers point to (a
``v4l2_ext_controls`` array, a multi-planar ``v4l2_buffer``'s planes). As the kernel would, the
driver reads and writes those in the caller's address space; here through process_vm_readv/writev
(the daemon runs as root or as the caller's user, so it may).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno

from memtrackfs.errors import KernelError

MAX_COPY = 1 << 20


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
for _fn in (_libc.process_vm_readv, _libc.process_vm_writev):
    _fn.restype = ctypes.c_ssize_t
    _fn.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                    ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.c_ulong]


def _check(addr: int, length: int) -> None:
    if not 0 <= length <= MAX_COPY:
        raise KernelError(errno.EINVAL, f"copy length must be 0..{MAX_COPY}")
    if not 0 < addr < 2**64 - length:
        raise KernelError(errno.EFAULT, f"bad user address {addr:#x}")


def copy_from_user(pid: int, addr: int, length: int) -> bytes:
    _check(addr, length)
    buf = ctypes.create_string_buffer(length)
    local, remote = _IoVec(ctypes.addressof(buf), length), _IoVec(addr, length)
    done = _libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if done != length:
        raise KernelError(errno.EFAULT, f"cannot read {length} bytes at {addr:#x} of pid {pid}: "
                                        f"{errno.errorcode.get(ctypes.get_errno(), 'short read')}")
    return buf.raw


def copy_to_user(pid: int, addr: int, data: bytes) -> None:
    _check(addr, len(data))
    buf = ctypes.create_string_buffer(data, len(data))
    local, remote = _IoVec(ctypes.addressof(buf), len(data)), _IoVec(addr, len(data))
    done = _libc.process_vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if done != len(data):
        raise KernelError(errno.EFAULT, f"cannot write {len(data)} bytes at {addr:#x} of pid {pid}: "
                                        f"{errno.errorcode.get(ctypes.get_errno(), 'short write')}")


def read_mapping(pid: int, name: str, offset: int, length: int) -> bytes | None:
    """What process ``pid`` sees at file offset ``offset`` of its mapping of device node ``name``
    (a FUSE file: device major 0), or None if it maps nothing there. The driver's view of a
    buffer the application filled through mmap(): its stores sit in the page cache, and reach
    the daemon's own store only when the kernel writes them back."""
    if not 0 <= length <= MAX_COPY:
        raise KernelError(errno.EINVAL, f"read length must be 0..{MAX_COPY}")
    try:
        with open(f"/proc/{pid}/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].rstrip("\n").endswith(f"/{name}") or not fields[3].startswith("00:"):
            continue
        start, end = (int(value, 16) for value in fields[0].split("-"))
        file_offset = int(fields[2], 16)
        if file_offset <= offset and offset + length <= file_offset + (end - start):
            return copy_from_user(pid, start + offset - file_offset, length)
    return None
