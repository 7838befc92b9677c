"""Open files whose release has effects, and the processes known to hold them.

A device node's release goes on to its driver (vpu_sim frees the instance); a driver-socket
connection's end releases what it held (dma-buf references, heap memory, device nodes). Both
come asynchronously after their process exits: FUSE sends RELEASE in the background, and the
server sees a connection's end when its reader wakes. ``settle`` waits until no such file is
held only by processes that have exited, which is when every release they caused is done.

Pure model: no locks, no I/O. The owner (``Kernel``) serialises every call; whether a holder
still runs is for the caller to find out (``memtrackfs.processes``).
"""
from __future__ import annotations

import itertools
from typing import NamedTuple, Optional


class ProcessId(NamedTuple):
    """A process as the kernel tells it apart: its tgid and its start time (clock ticks after boot)."""

    tgid: int
    start: int


class FileRecord(NamedTuple):
    what: str                                # e.g. "dev/video0"
    holders: tuple[Optional[ProcessId], ...]  # the opener, then other processes that used it
    releasing: bool                          # its release is being processed (at the driver)


class OpenFileTable:
    def __init__(self) -> None:
        self._files: dict[int, FileRecord] = {}
        self._keys = itertools.count(1)
        self.closes = 0  # how many have been closed: a waiter's "something changed"

    def open(self, what: str, holder: Optional[ProcessId]) -> int:
        key = next(self._keys)
        self._files[key] = FileRecord(what, (holder,), False)
        return key

    def used_by(self, key: int, holder: Optional[ProcessId]) -> None:
        """Another process used the file (it inherited it, or got it passed)."""
        entry = self._files.get(key)
        if entry is not None and holder not in entry.holders:
            self._files[key] = entry._replace(holders=entry.holders + (holder,))

    def releasing(self, key: int) -> None:
        entry = self._files.get(key)
        if entry is not None:
            self._files[key] = entry._replace(releasing=True)

    def close(self, key: int) -> None:
        if self._files.pop(key, None) is not None:
            self.closes += 1

    def entries(self) -> list[FileRecord]:
        return list(self._files.values())
