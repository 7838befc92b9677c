"""What a path of the mount can be: directories, generated (procfs/debugfs-like) files, dev/kmsg,
device nodes, and symbolic links.

Entries know how to list, render and write themselves against the kernel; the FUSE adapter only
maps paths and file handles onto them. ``lookup``/``names``/``render`` run under ``Kernel.lock``
(the adapter takes it); ``write`` runs inside ``Kernel.transaction()``.
"""
from __future__ import annotations

import base64
import errno
import stat
from typing import Any, Callable, Mapping, Optional

from memtrackfs.errors import KernelError
from memtrackfs.fs.poll import DEFAULT_POLLMASK, POLLERR, POLLHUP, POLLIN, POLLRDNORM
from memtrackfs.kernel import Kernel
from memtrackfs.model.buffer_memory import MAPPABLE_SIZE
from memtrackfs.model.devices import DeviceNode
from memtrackfs.render.kmsg import render_kmsg_record


class OpenFile:
    """One open() of a file: its entry, its snapshot (rendered at the first read at offset 0)."""

    __slots__ = ("entry", "fh", "snapshot", "cursor", "file_key", "users")

    def __init__(self, entry: "File", fh: int) -> None:
        self.entry = entry
        self.fh = fh
        self.snapshot: Optional[bytes] = None
        self.cursor = 0  # dev/kmsg: sequence number of the next record to return
        # Device nodes: the kernel's record of it (``Kernel.files``), and the tgids that used it.
        self.file_key = 0
        self.users: set[int] = set()


class Entry:
    mode = 0
    size = 0  # what stat reports: procfs and debugfs files say 0

    @property
    def file_type(self) -> int:
        raise NotImplementedError


class Directory(Entry):
    """A directory with fixed children, or children computed from the model on each lookup."""

    def __init__(self, children: Optional[Mapping[str, Entry]] = None, mode: int = 0o555,
                 lookup: Optional[Callable[[str], Optional[Entry]]] = None,
                 names: Optional[Callable[[], list[str]]] = None) -> None:
        self.children = dict(children or {})
        self.mode = mode
        self._lookup = lookup
        self._names = names

    file_type = stat.S_IFDIR

    def lookup(self, name: str) -> Optional[Entry]:
        entry = self.children.get(name)
        if entry is None and self._lookup is not None:
            entry = self._lookup(name)
        return entry

    def names(self) -> list[str]:
        return list(self.children) + (self._names() if self._names is not None else [])


class Symlink(Entry):
    """A symbolic link; the kernel resolves it, the mount only answers ``readlink``."""

    file_type = stat.S_IFLNK
    mode = 0o777  # as every Linux symlink: its target's permissions are the ones that count

    def __init__(self, target: str) -> None:
        self.target = target


class File(Entry):
    file_type = stat.S_IFREG

    def read(self, kernel: Kernel, handle: OpenFile, size: int, offset: int) -> bytes:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        # procfs answers EIO when root writes a file that has no write handler.
        raise KernelError(errno.EIO, "this file is read-only")

    def poll(self, kernel: Kernel, handle: OpenFile) -> int:
        """The poll(2) events ready now; a file that can become ready later also has its open
        files woken (``PollHandles.wake``) when it does. Generated files have no poll handler:
        the kernel's answer for those is DEFAULT_POLLMASK."""
        return DEFAULT_POLLMASK


class GeneratedFile(File):
    """A seq_file-like file: the whole content rendered once per open, served from the snapshot."""

    def __init__(self, render: Callable[[], bytes],
                 write: Optional[Callable[[bytes], None]] = None) -> None:
        self.render = render
        self._write = write
        self.mode = 0o644 if write is not None else 0o444

    def read(self, kernel: Kernel, handle: OpenFile, size: int, offset: int) -> bytes:
        if offset == 0 or handle.snapshot is None:
            with kernel.lock:
                handle.snapshot = self.render()
        return handle.snapshot[offset:offset + size]

    def write(self, data: bytes) -> None:
        if self._write is None:
            super().write(data)
        else:
            self._write(data)


class KmsgFile(File):
    """``/dev/kmsg``: each read() returns exactly one whole record, live; EOF after the newest."""

    mode = 0o444

    def read(self, kernel: Kernel, handle: OpenFile, size: int, offset: int) -> bytes:
        with kernel.lock:
            records = kernel.log.records
            if not records:
                return b""
            first = records[0].seq
            if offset == 0 or handle.cursor < first:
                # lseek(0) starts again at the oldest record still in the ring, as the kernel does.
                handle.cursor = first
            index = handle.cursor - first
            if index >= len(records):
                return b""
            data = render_kmsg_record(records[index])
        if len(data) > size:
            raise KernelError(errno.EINVAL, "read buffer smaller than the next record")
        handle.cursor += 1
        return data

    def poll(self, kernel: Kernel, handle: OpenFile) -> int:
        # devkmsg_poll(): readable while a record follows the reader's position.
        with kernel.lock:
            readable = kernel.log.next_seq > handle.cursor and bool(kernel.log.records)
        return POLLIN | POLLRDNORM if readable else 0


class IoctlFailed(KernelError):
    """A failed ioctl whose argument still goes back to the caller (``output``; None: as it was)."""

    def __init__(self, code: int, message: str, output: Optional[bytes]) -> None:
        super().__init__(code, message)
        self.output = output


class DeviceFile(File):
    """A device node served by a driver: open, ioctl and release go to it and wait (bounded).

    It is a regular file, not a character device: the kernel would route a device node's
    operations by its device number, past FUSE. It is opened without direct I/O, so that
    ``mmap(MAP_SHARED)`` works through the page cache (``model.buffer_memory``); its size covers
    every mmap offset a driver hands out.
    """

    mode = 0o666
    size = MAPPABLE_SIZE

    def __init__(self, node: DeviceNode, timeout: float) -> None:
        self.node = node
        self.timeout = timeout

    def _call(self, handle: OpenFile, event: dict[str, Any], *, check: bool = True) -> dict[str, Any]:
        if not self.node.alive:
            raise KernelError(errno.ENODEV, f"dev/{self.node.name}: its driver is gone")
        reply = self.node.driver.call({**event, "device": self.node.name, "file": handle.fh}, self.timeout)
        if reply.get("mappable") is not None:
            # The driver's buffers changed (REQBUFS, CREATE_BUFS): what mmap may reach now.
            self.node.memory.set_regions(handle.fh, reply["mappable"])
        if check and reply["result"]:
            raise self._failure(reply)
        return reply

    def _failure(self, reply: dict[str, Any]) -> KernelError:
        name = reply["result"]
        return KernelError(getattr(errno, name), f"dev/{self.node.name}: driver answered {name}")

    def open(self, handle: OpenFile, flags: int, tgid: int, pid: int) -> None:
        self._call(handle, {"event": "open", "flags": flags, "tgid": tgid, "pid": pid})

    def ioctl(self, handle: OpenFile, cmd: int, arg: int, data_in: bytes, out_size: int,
              tgid: int, pid: int) -> bytes:
        reply = self._call(handle, {"event": "ioctl", "cmd": cmd, "arg": arg, "tgid": tgid, "pid": pid,
                                    "in": base64.b64encode(data_in).decode(), "out_size": out_size}, check=False)
        if reply["result"]:
            # A failed ioctl copies nothing back, but the extended-control ones their error_idx
            # (the driver then sends the argument along).
            failure = self._failure(reply)
            raise IoctlFailed(failure.errno, failure.message, reply["out"][:out_size] or None)
        return reply["out"][:out_size]

    def release(self, handle: OpenFile) -> None:
        self.node.memory.release(handle.fh)
        if self.node.alive:
            self._call(handle, {"event": "release"})

    def poll(self, kernel: Kernel, handle: OpenFile) -> int:
        """The driver's poll answer (its ``revents``); it ``wake``s the file when that changes.
        A node whose driver is gone is readable and writable with an error, as a hung-up file."""
        try:
            reply = self._call(handle, {"event": "poll"})
        except KernelError:
            return POLLERR | POLLHUP
        return reply.get("revents", 0)

    def read(self, kernel: Kernel, handle: OpenFile, size: int, offset: int) -> bytes:
        # A page-cache fill of a mapped buffer. A read() of a V4L2 node is EINVAL (v4l2_read():
        # no read op), and so is this unless the offset is in a buffer: FUSE cannot tell the two.
        return self.node.memory.read(offset, size)

    def write_at(self, data: bytes, offset: int, from_page_cache: bool) -> None:
        if not from_page_cache:
            raise KernelError(errno.EINVAL, "a V4L2 mem2mem device has no write()")
        self.node.memory.write_back(offset, data)
