"""The FUSE adapter: maps paths to entries and file handles to open files. No logic of its own.

Errors: entries raise KernelError, an OSError, which fusepy and mfusepy turn into -errno.
Every generated file is opened with direct I/O, so readers read until EOF, as with procfs and
debugfs; the size a file reports is its entry's (``File.st_size``: README "Sizes"); symlinks
report st_size 0, as procfs's do. Device nodes are opened through the page cache instead, kept
across opens, so that their buffers can be mapped (``entries.DeviceFile``).
"""
from __future__ import annotations

import ctypes
import errno
import itertools
import os
import stat
import time
from typing import Any, Callable, NoReturn, Optional

from memtrackfs.fs.context import caller, fuse
from memtrackfs.fs.entries import (
    DeviceFile,
    Directory,
    Entry,
    File,
    IoctlFailed,
    KmsgFile,
    OpenFile,
    PinnedRenderings,
    Symlink,
)
from memtrackfs.fs.fuselib import keeping_thread_state
from memtrackfs.fs.poll import PollHandles
from memtrackfs.kernel import Kernel
from memtrackfs.processes import identify
from memtrackfs.usermem import copy_from_user


class MemtrackOperations(fuse.Operations):
    use_ns = True  # times as integer nanoseconds (mfusepy warns about floats)

    def __init__(self, kernel: Kernel, tree: Directory, on_ready: Optional[Callable[[], None]] = None) -> None:
        self.kernel = kernel
        self.tree = tree
        self._on_ready = on_ready
        self._open: dict[int, OpenFile] = {}   # dict get/set/pop are atomic: no lock needed
        self._pins = PinnedRenderings()        # what each user's open files hold
        self._fh = itertools.count(1)
        self._owner = (os.geteuid(), os.getegid())
        self._attrs: dict[tuple[int, int, int], dict[str, int]] = {}  # one attribute dict per kind
        self._boot_ns = time.time_ns()
        self.poll_handles = PollHandles(fuse)
        kernel.log_listeners.append(self._wake_kmsg_readers)
        kernel.file_wake_listeners.append(self._wake_device_file)

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
        key = (entry.file_type, entry.mode, entry.size)
        attrs = self._attrs.get(key)
        if attrs is None:
            uid, gid = self._owner
            attrs = self._attrs[key] = {
                "st_mode": entry.file_type | entry.mode,
                "st_nlink": 2 if entry.file_type == stat.S_IFDIR else 1,
                "st_size": entry.size, "st_uid": uid, "st_gid": gid,
                "st_atime": self._boot_ns, "st_mtime": self._boot_ns, "st_ctime": self._boot_ns,
            }
        return attrs

    def _used_by(self, handle: OpenFile, tgid: int) -> None:
        """Record a process that holds a device file (its opener, or one it was passed to), so
        that ``settle`` knows whose exit its release waits for."""
        if tgid in handle.users:
            return
        handle.users.add(tgid)
        holder = identify(tgid)
        with self.kernel.lock:
            if handle.file_key:
                self.kernel.files.used_by(handle.file_key, holder)
            else:
                handle.file_key = self.kernel.files.open(f"dev/{handle.entry.node.name}", holder)

    def _note_use(self, entry: DeviceFile, tgid: int) -> None:
        """The caller looked this node up or opened it: /sys/dev/char/0:0 is it for that process."""
        with self.kernel.transaction() as k:  # a change of the model, however small (README "Locking")
            k.devices.note_use(tgid, entry.node.name)

    @staticmethod
    def _interrupted() -> bool:
        """Whether the caller of this thread's request was interrupted by a signal (the kernel
        sent FUSE_INTERRUPT); a request that waits must then end with EINTR."""
        return bool(fuse._libfuse.fuse_interrupted())

    def _file(self, path: str) -> File:
        entry = self._resolve(path)
        if not isinstance(entry, File):
            raise fuse.FuseOSError(errno.EISDIR)
        return entry

    # -- operations --------------------------------------------------------------------------

    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        entry = self._resolve(path)
        if isinstance(entry, DeviceFile) and entry.node.identity is not None:
            self._note_use(entry, caller()[0])
        attrs = self._stat(entry)
        if isinstance(entry, File):
            size = entry.st_size(self.kernel)
            if size != attrs["st_size"]:
                attrs = {**attrs, "st_size": size}
        return attrs

    def readdir(self, path: str, fh: Any) -> list[str]:
        entry = self._resolve(path)
        if not isinstance(entry, Directory):
            raise fuse.FuseOSError(errno.ENOTDIR)
        with self.kernel.lock:
            return [".", "..", *entry.names()]

    def readlink(self, path: str) -> str:
        entry = self._resolve(path)
        if not isinstance(entry, Symlink):
            raise fuse.FuseOSError(errno.EINVAL)
        return entry.target

    def open(self, path: str, fi: Any) -> int:
        entry = self._file(path)
        handle = OpenFile(entry, next(self._fh), fuse.fuse_get_context()[0], self._pins)
        handle.interrupted = self._interrupted
        entry.on_open(self.kernel, handle)
        if isinstance(entry, DeviceFile):
            tgid, pid = caller()
            if entry.node.identity is not None:
                self._note_use(entry, tgid)
            entry.open(handle, fi.flags, tgid, pid)
            self._used_by(handle, tgid)
            # Through the page cache (mmap needs it), and keep what is cached: another open
            # must not drop pages a mapping of this node still relies on.
            fi.direct_io, fi.keep_cache = 0, 1
        else:
            fi.direct_io = 1
        self._open[handle.fh] = handle
        fi.fh = handle.fh
        return 0

    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        handle = self._open.get(fi.fh)
        if handle is None:
            raise fuse.FuseOSError(errno.EBADF)
        handle.flags = fi.flags  # FUSE_READ carries the file's flags as they are now
        return handle.entry.read(self.kernel, handle, size, offset)

    def write(self, path: str, data: bytes, offset: int, fi: Any) -> int:
        handle = self._open.get(fi.fh)
        if handle is None:
            raise fuse.FuseOSError(errno.EBADF)
        if isinstance(handle.entry, DeviceFile):
            # writepage: the kernel writing back a dirty page of a mapping (FUSE_WRITE_CACHE),
            # not a write() call.
            handle.entry.write_at(bytes(data), offset, bool(fi.writepage))
            return len(data)
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
        tgid, pid = caller()
        self._used_by(handle, tgid)
        try:
            out = handle.entry.ioctl(handle, cmd, arg or 0, data_in, out_size, tgid, pid)
        except IoctlFailed as exc:
            # libfuse 2 sends the output buffer back with the error, and the kernel copies it to
            # the caller: it must hold what the caller had, unless the driver gave it back.
            if out_size and data:
                kept = exc.output or data_in or self._user_bytes(pid, arg, out_size)
                ctypes.memmove(data, kept, min(len(kept), out_size))
            raise
        if out and data:
            ctypes.memmove(data, out, len(out))
        return 0

    @staticmethod
    def _user_bytes(pid: int, address: Any, size: int) -> bytes:
        """The caller's own argument (an _IOR ioctl sends none), or zeros if it cannot be read."""
        try:
            return copy_from_user(pid, address or 0, size)
        except OSError:
            return bytes(size)

    def poll(self, path: str, fi: Any, poll_handle: Optional[int], revents: Any) -> int:
        handle = self._open.get(fi.fh)
        if handle is None:
            raise fuse.FuseOSError(errno.EBADF)
        self.poll_handles.arm(handle.fh, poll_handle)  # before the mask: no change can be missed
        revents[0] = handle.entry.poll(self.kernel, handle)
        return 0

    def _wake_kmsg_readers(self) -> None:
        def reads_kmsg(fh: int) -> bool:
            handle = self._open.get(fh)
            return handle is not None and isinstance(handle.entry, KmsgFile)
        self.poll_handles.wake(reads_kmsg)

    def _wake_device_file(self, fh: int) -> None:
        """A driver says its open file ``fh`` may answer poll differently now."""
        self.poll_handles.wake_one(fh)

    # -- what the mount refuses, as procfs, sysfs and debugfs refuse it --------------------------
    # Without these, libfuse answers ENOSYS ("Function not implemented"), which no kernel
    # filesystem says. procfs fails the lookup of a missing name (ENOENT) before any create,
    # mkdir, symlink, link or mknod is tried; sysfs and debugfs find no such name and have no such
    # operation: create is EACCES, the others EPERM (vfs_create, vfs_mkdir, ... in fs/namei.c).

    @staticmethod
    def _refuse_new(path: str, otherwise: int) -> NoReturn:
        parts = path.split("/")
        raise fuse.FuseOSError(errno.ENOENT if len(parts) > 2 and parts[1] == "proc" else otherwise)

    def create(self, path: str, mode: int, fi: Any = None) -> NoReturn:
        self._refuse_new(path, errno.EACCES)

    def mkdir(self, path: str, mode: int) -> NoReturn:
        self._refuse_new(path, errno.EPERM)

    def mknod(self, path: str, mode: int, dev: int) -> NoReturn:
        self._refuse_new(path, errno.EPERM)

    def symlink(self, target: str, source: str) -> NoReturn:
        self._refuse_new(target, errno.EPERM)

    def link(self, target: str, source: str) -> NoReturn:
        self._refuse_new(target, errno.EPERM)

    def rename(self, old: str, new: str) -> NoReturn:
        self._refuse_new(new, errno.EPERM)

    def unlink(self, path: str) -> NoReturn:
        raise fuse.FuseOSError(errno.EPERM)

    def rmdir(self, path: str) -> NoReturn:
        raise fuse.FuseOSError(errno.EPERM)

    def chmod(self, path: str, mode: int) -> NoReturn:
        # The kernel's files take a mode change from root; these keep their modes (README).
        raise fuse.FuseOSError(errno.EPERM)

    def chown(self, path: str, uid: int, gid: int) -> NoReturn:
        raise fuse.FuseOSError(errno.EPERM)

    def utimens(self, path: str, times: Any = None) -> int:
        # `touch` of an existing file succeeds, as on procfs; the times shown stay the mount's.
        self._resolve(path)
        return 0

    def release(self, path: str, fi: Any) -> int:
        self.poll_handles.forget(fi.fh)
        handle = self._open.pop(fi.fh, None)
        if handle is not None:
            handle.close()
        if handle is not None and isinstance(handle.entry, DeviceFile):
            with self.kernel.lock:
                self.kernel.files.releasing(handle.file_key)
            try:
                handle.entry.release(handle)
            except OSError:
                pass  # close() cannot fail for the application; the driver's loss is its own
            finally:
                self.kernel.close_file(handle.file_key)  # the driver has done its part: settled
        return 0


# Every FUSE operation (public method) first keeps its worker thread's state (fs.fuselib).
for _name, _method in list(vars(MemtrackOperations).items()):
    if not _name.startswith("_") and _name != "init" and callable(_method):
        setattr(MemtrackOperations, _name, keeping_thread_state(_method))
