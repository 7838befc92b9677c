"""The FUSE adapter: maps paths to entries and file handles to open files. No logic of its own.

Errors: entries raise KernelError, an OSError, which fusepy and mfusepy turn into -errno.
Every file is opened with direct I/O and reports st_size 0, so readers read until EOF, as with
procfs and debugfs.
"""
from __future__ import annotations

import ctypes
import errno
import itertools
import os
import stat
import time
from typing import Any, Callable, Optional

from memtrackfs.fs.entries import DeviceFile, Directory, Entry, File, OpenFile
from memtrackfs.fs.fuselib import load_fuse_module
from memtrackfs.kernel import Kernel

fuse = load_fuse_module()


class MemtrackOperations(fuse.Operations):
    use_ns = True  # times as integer nanoseconds (mfusepy warns about floats)

    def __init__(self, kernel: Kernel, tree: Directory, on_ready: Optional[Callable[[], None]] = None) -> None:
        self.kernel = kernel
        self.tree = tree
        self._on_ready = on_ready
        self._open: dict[int, OpenFile] = {}   # dict get/set/pop are atomic: no lock needed
        self._fh = itertools.count(1)
        self._owner = (os.geteuid(), os.getegid())
        self._attrs: dict[tuple[int, int], dict[str, int]] = {}  # one attribute dict per kind
        self._boot_ns = time.time_ns()

    # -- plumbing ----------------------------------------------------------------------------

    def init(self, path: str) -> None:
        # libfuse calls init once the kernel has the mount: now it is usable.
        if self._on_ready is not None:
            self._on_ready()

    def _resolve(self, path: str) -> Entry:
        entry: Entry = self.tree
        if path == "/":
            return entry
        with self.kernel.lock:
            for part in path[1:].split("/"):
                if not isinstance(entry, Directory):
                    raise fuse.FuseOSError(errno.ENOTDIR)
                found = entry.lookup(part)
                if found is None:
                    raise fuse.FuseOSError(errno.ENOENT)
                entry = found
        return entry

    def _stat(self, entry: Entry) -> dict[str, int]:
        key = (entry.file_type, entry.mode)
        attrs = self._attrs.get(key)
        if attrs is None:
            uid, gid = self._owner
            attrs = self._attrs[key] = {
                "st_mode": entry.file_type | entry.mode,
                "st_nlink": 2 if entry.file_type == stat.S_IFDIR else 1,
                "st_size": 0, "st_uid": uid, "st_gid": gid,
                "st_atime": self._boot_ns, "st_mtime": self._boot_ns, "st_ctime": self._boot_ns,
            }
        return attrs

    @staticmethod
    def _caller() -> tuple[int, int]:
        """(tgid, pid) of the calling thread, as ``current`` has them (FUSE gives the thread id)."""
        pid = fuse.fuse_get_context()[2]
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Tgid:"):
                        return int(line.split()[1]), pid
        except OSError:
            pass
        return pid, pid

    def _file(self, path: str) -> File:
        entry = self._resolve(path)
        if not isinstance(entry, File):
            raise fuse.FuseOSError(errno.EISDIR)
        return entry

    # -- operations --------------------------------------------------------------------------

    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        return self._stat(self._resolve(path))

    def readdir(self, path: str, fh: Any) -> list[str]:
        entry = self._resolve(path)
        if not isinstance(entry, Directory):
            raise fuse.FuseOSError(errno.ENOTDIR)
        with self.kernel.lock:
            return [".", "..", *entry.names()]

    def open(self, path: str, fi: Any) -> int:
        entry = self._file(path)
        handle = OpenFile(entry, next(self._fh))
        if isinstance(entry, DeviceFile):
            entry.open(handle, fi.flags, *self._caller())
        self._open[handle.fh] = handle
        fi.fh = handle.fh
        fi.direct_io = 1
        return 0

    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        handle = self._open.get(fi.fh)
        if handle is None:
            raise fuse.FuseOSError(errno.EBADF)
        return handle.entry.read(self.kernel, handle, size, offset)

    def write(self, path: str, data: bytes, offset: int, fi: Any) -> int:
        handle = self._open.get(fi.fh)
        if handle is None:
            raise fuse.FuseOSError(errno.EBADF)
        with self.kernel.transaction():
            handle.entry.write(bytes(data))
        return len(data)

    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        # `echo 0 > peak` truncates first; procfs files ignore the size.
        self._file(path)
        return 0

    def ioctl(self, path: str, cmd: int, arg: Any, fi: Any, flags: int, data: Any) -> int:
        handle = self._open.get(fi.fh)
        if handle is None:
            raise fuse.FuseOSError(errno.EBADF)
        if not isinstance(handle.entry, DeviceFile):
            raise fuse.FuseOSError(errno.ENOTTY)
        cmd &= 0xFFFFFFFF  # the bindings pass it as a signed int
        # The _IOC encoding tells how many bytes come in (_IOC_WRITE) and go back (_IOC_READ).
        direction, size = cmd >> 30, (cmd >> 16) & 0x3FFF
        data_in = ctypes.string_at(data, size) if direction & 1 and size and data else b""
        out_size = size if direction & 2 else 0
        out = handle.entry.ioctl(handle, cmd, arg or 0, data_in, out_size, *self._caller())
        if out and data:
            ctypes.memmove(data, out, len(out))
        return 0

    def release(self, path: str, fi: Any) -> int:
        handle = self._open.pop(fi.fh, None)
        if handle is not None and isinstance(handle.entry, DeviceFile):
            try:
                handle.entry.release(handle)
            except OSError:
                pass  # close() cannot fail for the application; the driver's loss is its own
        return 0
