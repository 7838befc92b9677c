"""An open file of a VPU video node: V4L2 ioctls decoded from their bytes and answered, the
file's events, priority and poll.

The device-node forwarding hands each ioctl over as (cmd, the ``_IOC_SIZE`` argument bytes, the
caller's tgid/pid) plus access to the caller's memory for the arrays behind pointers (the plane
array of a multi-planar ``v4l2_buffer``, the control array of ``v4l2_ext_controls``), and sends
back (errno, output bytes). What ``video_usercopy()`` and ``__video_do_ioctl()`` do before a
driver sees an ioctl is done here once for all: the table says which ioctls the node has
(anything else is ENOTTY, as for an ioctl the driver does not implement: EXPBUF among them,
since a FUSE daemon cannot put a dma-buf fd into the caller), which part of the argument is
cleared before the handler (``INFO_FL_CLEAR``), which ioctls a file below the device's highest
priority may not use (``INFO_FL_PRIO``: EBUSY), and which copy their argument back even on
error (``INFO_FL_ALWAYS_COPY``: the extended controls' ``error_idx``).

One ``VideoFile`` serialises its ioctls (as the driver's per-instance lock does) and lets a
blocking DQBUF or DQEVENT sleep, without holding that lock, until a frame completes, an event
arrives or another thread changes the queues. ``poll()`` answers as ``v4l2_m2m_poll()`` does
and asks ``wake`` to tell the poller when the answer may have changed (a buffer done, an event
queued), including at the time the next frame is due.
"""
from __future__ import annotations

import ctypes
import errno
import select
import threading
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

from memtrackfs.driverkit import UserMemory
from memtrackfs.errors import KernelError
from vpu_sim import uapi
from vpu_sim.driver.amphion.device import VpuDevice
from vpu_sim.driver.amphion.events import EventQueue
from vpu_sim.driver.amphion.instance import control_event
from vpu_sim.driver.amphion.model import CoreKind
from vpu_sim.driver.memtrack import Caller


class IoctlError(KernelError):
    """An error whose argument is still copied back (the extended-control ioctls)."""

    def __init__(self, code: int, message: str, output: bytes) -> None:
        super().__init__(code, message)
        self.output = output


@dataclass
class Call:
    """One ioctl as the handler sees it."""
    file: "VideoFile"
    arg: bytes                 # the argument, with what the core clears already cleared
    user: UserMemory
    caller: Caller
    nonblocking: bool

    @property
    def instance(self):
        return self.file.instance


Handler = Callable[[Call], bytes]


class IoctlInfo(NamedTuple):
    handler: Handler
    prio: bool = False                  # INFO_FL_PRIO
    clear_after: Optional[int] = None   # INFO_FL_CLEAR: bytes from this offset are zeroed


def clear_after(struct: type, field: str) -> int:
    """The offset where INFO_FL_CLEAR(struct, field) starts zeroing: just after ``field``."""
    member = getattr(struct, field)
    return member.offset + member.size


def load(struct: type, arg: bytes):
    """The argument as a struct; a short argument (an _IOR ioctl's) reads as zeros."""
    size = ctypes.sizeof(struct)
    return struct.from_buffer_copy(arg[:size].ljust(size, b"\0"))


class VideoFile:
    """One open() of the decoder or encoder node; ``release()`` ends it."""

    def __init__(self, device: VpuDevice, kind: CoreKind, caller: Caller,
                 wake: Callable[[], None] = lambda: None) -> None:
        from vpu_sim.driver.amphion.ioctl_table import (
            ioctl_table,  # the handlers import this module
        )

        self.device = device
        self.kind = kind
        self.instance = device.open(kind, caller)
        self.events = EventQueue()
        self.priorities = device.priorities[kind]
        self.priority = self.priorities.open()
        self._cond = threading.Condition()
        self._released = False
        self._wake = wake
        self._poll_waiting = False     # a poller was told "not ready": wake it on any change
        self._timer: Optional[threading.Timer] = None
        self._usage_changed = threading.Event()
        self.instance.emit = self._emit
        self.instance.usage_changed = self._on_usage_changed
        self._table = ioctl_table(kind)

    # -- dispatch ------------------------------------------------------------------------------

    def ioctl(self, cmd: int, arg: bytes, user: UserMemory, caller: Caller, *,
              nonblocking: bool = False) -> tuple[int, bytes]:
        """Run one ioctl; returns (0 or a positive errno, the bytes to copy back to the caller)."""
        info = self._table.get(cmd)
        if info is None:
            return errno.ENOTTY, b""
        if info.clear_after is not None:
            arg = arg[:info.clear_after].ljust(len(arg), b"\0")
        with self._cond:
            try:
                if self._released:
                    raise KernelError(errno.ENODEV, "the file was released")
                self._catch_up()
                if info.prio:
                    self.priorities.check(self.priority)
                return 0, info.handler(Call(self, arg, user, caller, nonblocking))
            except IoctlError as exc:
                return exc.errno, exc.output
            except OSError as exc:
                return exc.errno or errno.EIO, b""
            finally:
                self._cond.notify_all()  # a QBUF, STREAMOFF or command may wake a blocked DQBUF
                self._changed()

    def wait(self, ready: Callable[[], bool], what: str) -> None:
        """Sleep (the file's lock released) until ``ready()``, the next frame or any change."""
        while not ready():
            deadline = self.instance.next_event_time()
            self._cond.wait(None if deadline is None else max(0.0, deadline - self.instance.clock()))
            if self._released:
                raise KernelError(errno.ENODEV, f"the file was released during {what}")
            self._catch_up()

    def set_priority(self, new: int) -> None:
        self.priority = self.priorities.change(self.priority, new)

    # -- events --------------------------------------------------------------------------------

    def _emit(self, event: uapi.v4l2_event) -> None:
        """An event of the instance (called under the file's lock, inside an ioctl or poll)."""
        self.events.queue(event)

    def _on_usage_changed(self) -> None:
        """The tracker's notification arrived (on the socket's reader thread, which must never
        wait for this file's lock): the CTRL event is queued at the next ioctl or poll, and the
        poller is told now."""
        self._usage_changed.set()
        if self._poll_waiting:
            self._poll_waiting = False
            self._wake()

    def _catch_up(self) -> None:
        """Under the lock: queue what arrived from other threads, process frames due by now."""
        if self._usage_changed.is_set():
            self._usage_changed.clear()
            control = self.instance.controls.find(uapi.V4L2_CID_MEMORY_USAGE)
            self.events.queue(control_event(control, uapi.V4L2_EVENT_CTRL_CH_VALUE))
        self.instance.advance()

    # -- poll ----------------------------------------------------------------------------------

    def poll(self) -> int:
        """v4l2_m2m_poll(): the ready mask now; if nothing is ready, ``wake`` follows when it may be."""
        with self._cond:
            if self._released:
                return select.POLLERR
            self._catch_up()
            mask = self.instance.poll_mask()
            if self.events.pending:
                mask |= select.POLLPRI
            if not mask & (select.POLLIN | select.POLLOUT | select.POLLPRI):
                self._poll_waiting = True
                self._arm_timer()
            return mask

    def _changed(self) -> None:
        """After an ioctl: a poller told "not ready" must look again."""
        if self._poll_waiting:
            self._poll_waiting = False
            self._wake()

    def _arm_timer(self) -> None:
        """Wake the poller when the next frame or firmware event is due."""
        due = self.instance.next_event_time()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if due is None:
            return
        self._timer = threading.Timer(max(0.0, due - self.instance.clock()), self._timer_fired)
        self._timer.daemon = True
        self._timer.start()

    def _timer_fired(self) -> None:
        if self._poll_waiting:
            self._poll_waiting = False
            self._wake()

    # -- release -------------------------------------------------------------------------------

    def regions(self) -> list[tuple[int, int]]:
        with self._cond:
            return [] if self._released else self.instance.regions()

    def release(self) -> None:
        """The last close(): free the instance; a DQBUF still blocked returns ENODEV."""
        with self._cond:
            if self._released:
                return
            self._released = True
            if self._timer is not None:
                self._timer.cancel()
            self._cond.notify_all()
            self.priorities.close(self.priority)
            self.device.release(self.instance)
