"""What a path of the mount can be: directories, generated (procfs/debugfs-like) files, dev/kmsg,
device nodes, and symbolic links.

Entries know how to list, render and write themselves against the kernel; the FUSE adapter only
maps paths and file handles onto them. ``lookup``/``names``/``render`` run under ``Kernel.lock``
(the adapter takes it); ``write`` runs inside ``Kernel.transaction()``.
"""
from __future__ import annotations

import base64
import errno
import os
import stat
import threading
import time
import weakref
from typing import Any, Callable, Mapping, Optional

from memtrackfs.errors import KernelError
from memtrackfs.fs.poll import (
    DEFAULT_POLLMASK,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLPRI,
    POLLRDNORM,
)
from memtrackfs.kernel import Kernel
from memtrackfs.model.buffer_memory import MAPPABLE_SIZE
from memtrackfs.model.devices import DeviceNode
from memtrackfs.render.kmsg import parse_kmsg_write, render_kmsg_record


def _never() -> bool:
    return False


MAX_PINNED_PER_UID = 256 << 20  # renderings the open files of one user may hold


class PinnedRenderings:
    """What each user's open files hold in renderings, each distinct rendering counted once; a
    rendering that would take a user past ``limit`` is refused (ENOMEM, as seq_file's buffer
    allocation fails). Its lock is a leaf."""

    def __init__(self, limit: int = MAX_PINNED_PER_UID) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._held: dict[int, dict[int, list[Any]]] = {}  # uid -> id(rendering) -> [rendering, opens]
        self._bytes: dict[int, int] = {}

    def swap(self, uid: int, old: Optional[bytes], new: bytes) -> None:
        """An open file of ``uid`` drops ``old`` (if any) and holds ``new``."""
        with self._lock:
            if old is not None:
                self._drop(uid, old)
            held = self._held.setdefault(uid, {})
            entry = held.get(id(new))
            if entry is not None:
                entry[1] += 1
                return
            total = self._bytes.get(uid, 0) + len(new)
            if total > self._limit:
                if not held:
                    del self._held[uid]
                raise KernelError(errno.ENOMEM, f"the open files of uid {uid} hold {self._bytes.get(uid, 0) >> 20} "
                                                f"MiB of file contents; at most {self._limit >> 20} MiB: close some")
            held[id(new)] = [new, 1]
            self._bytes[uid] = total

    def release(self, uid: int, old: bytes) -> None:
        with self._lock:
            self._drop(uid, old)

    def _drop(self, uid: int, old: bytes) -> None:
        held = self._held[uid]
        entry = held[id(old)]
        entry[1] -= 1
        if not entry[1]:
            del held[id(old)]
            self._bytes[uid] -= len(old)
            if not held:
                del self._held[uid], self._bytes[uid]


class OpenFile:
    """One open() of a file: its entry, who opened it (``uid``), its snapshot (see GeneratedFile),
    and what a read needs to know of the caller: the file's status flags now (O_NONBLOCK may be
    set after open) and whether the caller was interrupted by a signal (set by the adapter).
    ``lock``: one read at a time, as seq_file's mutex (a read at offset 0 renders anew while
    another thread reads the same file)."""

    __slots__ = ("entry", "fh", "uid", "snapshot", "pinned", "generation", "fresh_until", "cursor", "offset",
                 "flags", "interrupted", "file_key", "users", "lock", "_pins", "__weakref__")

    def __init__(self, entry: "File", fh: int, uid: int = 0, pins: Optional[PinnedRenderings] = None) -> None:
        self.entry = entry
        self.fh = fh
        self.uid = uid
        self.snapshot: Optional[bytes] = None
        self.pinned: Optional[bytes] = None  # the snapshot counted against the user's limit
        self.generation = -1  # Kernel.generation the snapshot was rendered at
        self.fresh_until = 0.0  # until then, the first read serves the snapshot taken at open
        self.cursor = 0  # dev/kmsg: sequence number of the next record to return
        self.offset = 0  # dev/kmsg: the file position the next read comes from, unless it seeked
        self.flags = 0
        self.interrupted: Callable[[], bool] = _never
        # Device nodes: the kernel's record of it (``Kernel.files``), and the tgids that used it.
        self.file_key = 0
        self.users: set[int] = set()
        self.lock = threading.Lock()
        self._pins = pins

    def pin(self) -> None:
        """Count this open's snapshot against its user's limit (ENOMEM past it: then it holds
        none). Openers of the same model state share one rendering; each counts it once."""
        if self.snapshot is self.pinned or self._pins is None:
            return
        old, self.pinned = self.pinned, None
        try:
            self._pins.swap(self.uid, old, self.snapshot)
        except KernelError:
            self.snapshot = None
            raise
        self.pinned = self.snapshot

    def close(self) -> None:
        if self.pinned is not None and self._pins is not None:
            self._pins.release(self.uid, self.pinned)
        self.pinned = self.snapshot = None


# A rendering measured by a lookup is the one the open right after it serves, if that open and
# its first read come within this many seconds each (the kernel looks up just before it opens,
# and a sendfile reader reads at once).
MEASURE_VALID = 1.0
KMSG_SIZE = 1 << 62  # st_size of dev/kmsg: SEEK_END lands at an offset no record reaches
INTERRUPT_CHECK = 0.05  # seconds between two checks for a signal while a dev/kmsg reader waits


class Entry:
    mode = 0
    size = 0  # what stat reports (procfs and debugfs files say 0), unless File.st_size decides

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

    def st_size(self, kernel: Kernel) -> int:
        """What stat reports now (``size`` unless the content decides it)."""
        return self.size

    def on_open(self, kernel: Kernel, handle: OpenFile) -> None:
        """Called for every open, before the file's first read."""

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
    """A seq_file-like file: the whole content rendered once per open, served from the snapshot;
    a later read at offset 0 renders afresh (seq_file's lseek(0), for pollers that keep the fd).

    st_size is the length of the rendering an open now would serve, and an open serves the very
    bytes whose length the kernel was last told: splice(2) and sendfile(2) read a FUSE file
    through the page cache and stop at st_size on this kernel (README "Sizes"), so busybox cat,
    cp and Python's copyfile get the whole content, and nothing of another rendering. The kernel
    asks the size at the lookup before the open, and again at an fstat after it (copyfile's):
    an open whose first read has not come yet takes each new measure (``_waiting``). A first read
    that comes late (past MEASURE_VALID) shows the content of then, as seq_file shows it at the
    first read; one after the model changed renders too, so that a file whose object is gone
    fails as the kernel's does (sysfs ENODEV, debugfs EIO).

    Renderings are immutable and shared: every open and measure at one model state
    (``Kernel.generation``) gets the same bytes, rendered once, so many open files cost one
    rendering, not one each; what a user's open files hold is capped (``PinnedRenderings``)."""

    def __init__(self, render: Callable[[], bytes],
                 write: Optional[Callable[[bytes], None]] = None) -> None:
        self.render = render
        self._write = write
        self.mode = 0o644 if write is not None else 0o444
        # What the last st_size() measured: (when, the model's generation, the rendering).
        self._measured: tuple[float, int, Optional[bytes]] = (0.0, -1, None)
        self._waiting: weakref.WeakSet[OpenFile] = weakref.WeakSet()  # opened, not read yet
        self._rendered: tuple[int, bytes] = (-1, b"")  # (generation, rendering), under Kernel.lock

    def _rendering(self, kernel: Kernel) -> bytes:
        """The rendering of the model's state now (under Kernel.lock): made once per generation."""
        generation, rendering = self._rendered
        if generation != kernel.generation:
            rendering = self.render()
            self._rendered = (kernel.generation, rendering)
        return rendering

    def st_size(self, kernel: Kernel) -> int:
        with kernel.lock:
            try:
                rendering = self._rendering(kernel)
            except KernelError:
                return 0  # the read says why
            self._measured = (time.monotonic(), kernel.generation, rendering)
            for handle in self._waiting:
                handle.snapshot, handle.generation = rendering, kernel.generation
        return len(rendering)

    def on_open(self, kernel: Kernel, handle: OpenFile) -> None:
        # The kernel looks the name up (entry_timeout=0) just before it opens it: what that
        # lookup measured is what the kernel's i_size says (under constant change another open's
        # lookup may come between, but then the inode's size is that one's, served here too).
        with kernel.lock:
            when, generation, rendering = self._measured
            now = time.monotonic()
            if rendering is not None and now - when <= MEASURE_VALID:
                handle.snapshot, handle.generation = rendering, generation
                handle.fresh_until = now + MEASURE_VALID
                self._waiting.add(handle)

    def read(self, kernel: Kernel, handle: OpenFile, size: int, offset: int) -> bytes:
        with handle.lock:
            if handle.snapshot is None or offset == 0:
                with kernel.lock:
                    self._waiting.discard(handle)
                    fresh = handle.snapshot is not None and time.monotonic() <= handle.fresh_until
                    handle.fresh_until = 0.0
                    # The model unchanged since the measure: the snapshot is what a rendering now gives.
                    if not (fresh and kernel.generation == handle.generation):
                        current = self._rendering(kernel)  # fails if the object is gone
                        if not fresh:
                            handle.snapshot, handle.generation = current, kernel.generation
                handle.pin()
            assert handle.snapshot is not None
            return handle.snapshot[offset:offset + size]

    def write(self, data: bytes) -> None:
        if self._write is None:
            super().write(data)
        else:
            self._write(data)


class KmsgFile(File):
    """``/dev/kmsg`` as kernel/printk/printk.c's devkmsg_* make it (docs/spec/emulated-files.md).

    read(): exactly one whole record; at the newest it waits for the next one, or fails with
    EAGAIN if the file is O_NONBLOCK; EPIPE once if the records after the reader's position were
    overwritten (the position then moves to the oldest). A caller interrupted by a signal gets
    EINTR (checked every INTERRUPT_CHECK while it waits). Seeks: FUSE seeks by itself with the
    file's st_size (2^62), so a read from an unexpected offset is a seek: 0 (SEEK_SET, SEEK_DATA)
    goes to the oldest record, 2^62 and past (SEEK_END) after the newest. The device refuses
    any other seek (ESPIPE), and tail(1), refused, reads it as a pipe to its end, which never
    comes: a read from such an offset waits, silent, until interrupted, as tail -f does there.
    write(): one record per write, as devkmsg_write() parses it (``render.kmsg``).
    """

    mode = 0o644  # as devtmpfs has /dev/kmsg: root writes
    size = KMSG_SIZE

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self._wakeups = threading.Condition()  # a leaf lock
        self._records_seen = 0  # how many times new records were announced
        kernel.log_listeners.append(self._new_records)

    def _new_records(self) -> None:
        with self._wakeups:
            self._records_seen += 1
            self._wakeups.notify_all()

    def on_open(self, kernel: Kernel, handle: OpenFile) -> None:
        with kernel.lock:
            handle.cursor = kernel.log.first_seq()  # devkmsg_open(): the first valid record

    def read(self, kernel: Kernel, handle: OpenFile, size: int, offset: int) -> bytes:
        while True:
            with self._wakeups:
                announced = self._records_seen
            data = self._next_record(kernel, handle, size, offset)
            if data is not None:
                handle.offset = offset + len(data)
                return data
            if handle.flags & os.O_NONBLOCK:
                raise KernelError(errno.EAGAIN, "no record after the reader's position")
            with self._wakeups:
                if self._records_seen == announced:
                    self._wakeups.wait(INTERRUPT_CHECK)
            if handle.interrupted():
                raise KernelError(errno.EINTR, "interrupted while waiting for a record")

    def _next_record(self, kernel: Kernel, handle: OpenFile, size: int, offset: int) -> Optional[bytes]:
        log = kernel.log
        with kernel.lock:
            if offset != handle.offset:  # the reader seeked (devkmsg_llseek)
                if offset == 0:
                    handle.cursor = log.first_seq()
                elif offset >= KMSG_SIZE:
                    handle.cursor = log.next_seq
                else:
                    return None  # a seek the device refuses: nothing ever comes (see above)
                handle.offset = offset
            first = log.first_seq()
            if handle.cursor < first:
                handle.cursor = first
                raise KernelError(errno.EPIPE, "records after the reader's position were overwritten")
            if handle.cursor >= log.next_seq:
                return None
            data = render_kmsg_record(log.records[handle.cursor - first])
            handle.cursor += 1  # before the size check, as devkmsg_read(): a too small read loses it
        if len(data) > size:
            raise KernelError(errno.EINVAL, "read buffer smaller than the next record")
        return data

    def write(self, data: bytes) -> None:
        facility, level, message = parse_kmsg_write(data)
        self._kernel.log.emit(level, message, facility)

    def poll(self, kernel: Kernel, handle: OpenFile) -> int:
        # devkmsg_poll(): readable while a record follows the reader's position; an error too if
        # that position was overwritten.
        with kernel.lock:
            if handle.cursor >= kernel.log.next_seq:
                return 0
            if handle.cursor < kernel.log.first_seq():
                return POLLIN | POLLRDNORM | POLLERR | POLLPRI
        return POLLIN | POLLRDNORM


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
