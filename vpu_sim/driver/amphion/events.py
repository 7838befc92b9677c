"""One file handle's V4L2 events (``v4l2-event.c`` of Linux 6.1): subscriptions and the queue.

Every subscription holds at most one event (the drivers here subscribe with 0 elements, which
the core makes 1): a newer event of a subscription replaces the one still queued, merging what
changed for CTRL and SOURCE_CHANGE (the ``replace`` ops), and moves to the end of the queue.
Each queued event takes the file's next sequence number, also when it replaces one. DQEVENT
returns the oldest with the count still pending, ENOENT when there is none.

Not thread-safe: the file (``ioctls.VideoFile``) serialises access.
"""
from __future__ import annotations

import ctypes
import errno
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional

from memtrackfs.errors import KernelError
from vpu_sim import uapi

# What subscribing a (type, id) does beyond recording it: check the id, queue an initial event.
OnSubscribe = Callable[[int, int], None]


@dataclass
class _Pending:
    event: uapi.v4l2_event
    timestamp_ns: int


class EventQueue:
    def __init__(self) -> None:
        self._subscribed: set[tuple[int, int]] = set()
        self._queued: OrderedDict[tuple[int, int], _Pending] = OrderedDict()  # oldest first
        self._sequence = -1  # v4l2_fh_init()

    def subscribe(self, event_type: int, event_id: int, on_subscribe: Optional[OnSubscribe] = None) -> None:
        """v4l2_event_subscribe(): a second subscription of the same (type, id) changes nothing."""
        if event_type == uapi.V4L2_EVENT_ALL:
            raise KernelError(errno.EINVAL, "V4L2_EVENT_ALL cannot be subscribed to")
        key = (event_type, event_id)
        if key in self._subscribed:
            return
        self._subscribed.add(key)
        if on_subscribe is not None:
            try:
                on_subscribe(event_type, event_id)
            except BaseException:
                self._subscribed.discard(key)
                raise

    def unsubscribe(self, event_type: int, event_id: int) -> None:
        if event_type == uapi.V4L2_EVENT_ALL:
            self._subscribed.clear()
            self._queued.clear()
            return
        self._subscribed.discard((event_type, event_id))
        self._queued.pop((event_type, event_id), None)

    def queue(self, event: uapi.v4l2_event) -> bool:
        """v4l2_event_queue_fh(): True if the file is subscribed (the event is then pending)."""
        key = (event.type, event.id)
        if key not in self._subscribed:
            return False
        self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        old = self._queued.pop(key, None)
        if old is not None and event.type == uapi.V4L2_EVENT_CTRL:
            event.u.ctrl.changes |= old.event.u.ctrl.changes
        elif old is not None and event.type == uapi.V4L2_EVENT_SOURCE_CHANGE:
            changes = ctypes.c_uint32.from_buffer(event.u.data)
            changes.value |= ctypes.c_uint32.from_buffer(old.event.u.data).value
        event.sequence = self._sequence
        self._queued[key] = _Pending(event, time.monotonic_ns())
        return True

    @property
    def pending(self) -> bool:
        return bool(self._queued)

    def dequeue(self) -> uapi.v4l2_event:
        """DQEVENT: the oldest event, with how many are still pending; ENOENT if none is."""
        if not self._queued:
            raise KernelError(errno.ENOENT, "no event is pending")
        _, oldest = self._queued.popitem(last=False)
        event = oldest.event
        event.pending = len(self._queued)
        event.timestamp.tv_sec, event.timestamp.tv_nsec = divmod(oldest.timestamp_ns, 1_000_000_000)
        return event


def simple_event(event_type: int, event_id: int = 0, changes: int = 0) -> uapi.v4l2_event:
    """EOS, or SOURCE_CHANGE with its ``changes`` bits."""
    event = uapi.v4l2_event(type=event_type, id=event_id)
    ctypes.c_uint32.from_buffer(event.u.data).value = changes
    return event
