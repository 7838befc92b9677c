"""What the simulated driver needs from the outside world: a tracker and memory to allocate from.

``MemTrack`` is the RFC's API as the driver sees it (the daemon implements it over the
memtrackfs socket with ``memtrackfs.client``; unit tests use an in-memory fake). ``Backing`` is
the memory an allocation comes out of, so a board with a small CMA area fails the way a real one
does (ENOMEM at REQBUFS or STREAMON).
"""
from __future__ import annotations

import errno
import threading
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

Handle = int
UsageCallback = Callable[[int], None]


@dataclass(frozen=True)
class Caller:
    """The task the kernel's ``current`` would be: recorded by the tracker on nodes and leaves."""
    tgid: int
    pid: int


class MemTrack(Protocol):
    """The v4l2-memtrack calls a driver makes. Refusals raise OSError with the tracker's errno."""

    def create_root(self, name: str, caller: Caller) -> Handle: ...

    def create_node(self, parent: Handle, name: Optional[str], caller: Caller) -> Handle: ...

    def add(self, node: Handle, nbytes: int, name: Optional[str], caller: Caller) -> None: ...

    def sub(self, node: Handle, nbytes: int, name: Optional[str]) -> None: ...

    def destroy(self, node: Handle) -> None: ...

    def watch(self, node: Handle, delay_ms: int, callback: UsageCallback) -> None:
        """Call ``callback(subtree total)`` after changes, coalesced over ``delay_ms``.

        The callback may run on another thread (the socket reader) while the driver holds its
        own locks, so it must only store the value, never take a driver lock.
        """

    def unwatch(self, node: Handle) -> None: ...


class Allocation(Protocol):
    """Memory handed out for one buffer (``memtrackfs.model.heaps.Allocation`` fits)."""

    def release(self) -> None: ...


class Backing(Protocol):
    """Where allocations come from (a heap); ``allocate`` raises OSError(ENOMEM) when exhausted."""

    def allocate(self, nbytes: int) -> Allocation: ...


class MemoryArea:
    """A pool of ``capacity`` bytes (None: unlimited), e.g. the board's CMA area.

    Counts bytes only: fragmentation is not modelled, so a request fails exactly when the free
    total is too small. Shared by every instance, hence the lock.
    """

    def __init__(self, name: str, capacity: Optional[int] = None) -> None:
        self.name = name
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()

    def allocate(self, nbytes: int) -> Allocation:
        with self._lock:
            if self.capacity is not None and self.used + nbytes > self.capacity:
                raise OSError(errno.ENOMEM, f"{self.name}: cannot allocate {nbytes} bytes "
                                            f"({self.capacity - self.used} of {self.capacity} free)")
            self.used += nbytes
        return _Reservation(self, nbytes)

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes


class _Reservation:
    def __init__(self, area: MemoryArea, nbytes: int) -> None:
        self._area: Optional[MemoryArea] = area
        self._nbytes = nbytes

    def release(self) -> None:
        if self._area is None:
            raise ValueError("this allocation was already released")
        self._area._release(self._nbytes)
        self._area = None
