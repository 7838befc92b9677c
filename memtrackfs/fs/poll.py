"""poll(2), select(2) and epoll on the mount's files: FUSE_POLL answers and the wake-ups after them.

The kernel asks with FUSE_POLL (fs/fuse/file.c ``fuse_file_poll``): the daemon answers the events
ready now, and when the caller is going to wait the request carries a poll handle, which the
daemon signals once something changes (``fuse_notify_poll``) and then frees
(``fuse_pollhandle_destroy``), as libfuse's example/poll.c does. The kernel keeps one handle per
open file (``fuse_file.kh``), so a newer handle for the same open file replaces the older one.

The handle is armed before the entry computes its mask: a change between the two then costs one
spurious wake-up (the kernel polls again), never a lost one.

fusepy 3.0.1 has no poll operation: mounted with it, the kernel answers every poll() itself with
DEFAULT_POLLMASK (fs/fuse/file.c, once the daemon has no poll), so waiting pollers never sleep.
"""
from __future__ import annotations

import ctypes
import select
import threading
from types import ModuleType
from typing import Callable, Optional

POLLIN, POLLOUT, POLLPRI, POLLERR = select.POLLIN, select.POLLOUT, select.POLLPRI, select.POLLERR
POLLHUP = select.POLLHUP
POLLRDNORM, POLLWRNORM = select.POLLRDNORM, select.POLLWRNORM
# What the kernel answers for a file whose driver has no poll (include/linux/poll.h).
DEFAULT_POLLMASK = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM


class PollHandles:
    """The armed poll handles, one per open file (by file handle number).

    Its lock is a leaf (README "Locking"): it is never held while taking another lock, and the
    notifications (a write to /dev/fuse) are sent after it is released.
    """

    def __init__(self, fuse: ModuleType) -> None:
        lib = fuse._libfuse
        self._notify = lib.fuse_notify_poll
        self._notify.argtypes, self._notify.restype = [ctypes.c_void_p], ctypes.c_int
        self._destroy = lib.fuse_pollhandle_destroy
        self._destroy.argtypes, self._destroy.restype = [ctypes.c_void_p], None
        self._lock = threading.Lock()
        self._armed: dict[int, int] = {}  # fh -> struct fuse_pollhandle *

    def arm(self, fh: int, handle: Optional[int]) -> None:
        """Keep ``handle`` (None when the caller does not wait) to signal the file's next change."""
        if not handle:
            return
        with self._lock:
            old = self._armed.get(fh)
            self._armed[fh] = handle
        if old:
            self._destroy(old)

    def wake(self, matches: Callable[[int], bool]) -> None:
        """Signal every armed open file for which ``matches(fh)`` is true; each handle once."""
        with self._lock:
            due = [fh for fh in self._armed if matches(fh)]
            handles = [self._armed.pop(fh) for fh in due]
        for handle in handles:
            self._notify(handle)
            self._destroy(handle)

    def wake_one(self, fh: int) -> None:
        """Signal the open file ``fh`` if it is armed (a driver's wake, once per frame: no scan)."""
        handle = self._take(fh)
        if handle:
            self._notify(handle)
            self._destroy(handle)

    def forget(self, fh: int) -> None:
        """The file was released: nobody polls it any more."""
        handle = self._take(fh)
        if handle:
            self._destroy(handle)

    def _take(self, fh: int) -> Optional[int]:
        with self._lock:
            return self._armed.pop(fh, None)
