"""The emulated kernel: the whole model behind one lock, and the delivery of notifications.

``Kernel.lock`` guards every model object; ``transaction()`` holds it for one operation and
delivers the notifications it caused after releasing it. The lock discipline of the whole daemon
is written once, in the README ("Locking").
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence

from memtrackfs.delayed_work import DelayedWork
from memtrackfs.model.boards import Board, board
from memtrackfs.model.devices import DeviceTable
from memtrackfs.model.dmabuf import DmaBufTable
from memtrackfs.model.files import FileRecord, OpenFileTable, ProcessId
from memtrackfs.model.heaps import CmaHeap, HeapSpec, build_heaps, first_cma_heap
from memtrackfs.model.kmsg import LEVEL_WARNING, KernelLog
from memtrackfs.model.mpp import MppService
from memtrackfs.model.tracker import Node, NotifyCallback, Tracker, debug_sites
from memtrackfs.processes import is_running


class Kernel:
    """One emulated board's kernel state, shared by the FUSE adapter and the driver socket."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, driver_timeout: float = 5.0,
                 heaps: Optional[Sequence[HeapSpec]] = None, board: Board = board()) -> None:
        self.lock = threading.Lock()
        self.board = board
        # Records are timed on the host's clock since its boot, as printk's are: `dmesg -T` adds
        # them to the boot time it computes from the host's uptime.
        self.log = KernelLog(lambda: int(clock() * 1_000_000), debug_sites())
        self.tracker = Tracker(self.log)
        self.heaps = build_heaps(board.heaps if heaps is None else heaps, self.log)
        # The CMA heap whose pages proc/rk_dma_heap/alloc_bitmap shows (Rockchip has one): the
        # board's, else the first configured; None if there is no such CMA heap.
        shown = self.heaps.get(board.bitmap_heap) if board.bitmap_heap else first_cma_heap(self.heaps)
        self.bitmap_heap: Optional[CmaHeap] = shown if isinstance(shown, CmaHeap) else None
        self.dmabufs = DmaBufTable()
        self.mpp = MppService(board.mpp, self.dmabufs) if board.mpp is not None else None
        self.devices = DeviceTable()
        self.driver_timeout = driver_timeout  # how long a device-node call waits for its driver
        self.files = OpenFileTable()  # device-node files and socket connections, for settle
        self._file_closed = threading.Condition(self.lock)
        self.generation = 0  # counts transactions: a rendering made at one generation stays true until the next
        self._delayed = DelayedWork(self._fire_delayed)
        # Told, after the lock is released, that the kernel log has new records (dev/kmsg pollers).
        self.log_listeners: list[Callable[[], None]] = []
        # Told (never under the lock) that a driver's open file may have changed its poll answer.
        self.file_wake_listeners: list[Callable[[int], None]] = []
        self._announced_seq = 0

    @contextmanager
    def transaction(self) -> Iterator["Kernel"]:
        """Hold the model lock for one operation; deliver the notifications it caused afterwards."""
        with self.lock:
            try:
                yield self
            finally:
                self.generation += 1  # the model may have changed: renderings of before are old
                due = self._take_due_notifications()
                new_records = self.log.next_seq != self._announced_seq
                self._announced_seq = self.log.next_seq
        for callback, node, usage in due:
            self._call(callback, node, usage)
        if new_records:
            for listener in self.log_listeners:
                listener()

    def _take_due_notifications(self) -> list[tuple[NotifyCallback, Node, int]]:
        if self.tracker.notify_dropped:
            self._delayed.cancel(self.tracker.notify_dropped)
            self.tracker.notify_dropped = []
        due = self.tracker.notify_due
        if not due:
            return []
        self.tracker.notify_due = []
        immediate = []
        for node in due:
            if node.notify is None:
                continue
            if node.notify_delay_ms == 0:
                immediate.append((node.notify, node, node.usage))
            else:
                self._delayed.schedule(node, node.notify_delay_ms)
        return immediate

    def _fire_delayed(self, node: Node) -> None:
        with self.lock:
            callback = node.notify if node.alive else None
            usage = node.usage
        if callback is not None:
            self._call(callback, node, usage)

    def _call(self, callback: NotifyCallback, node: Node, usage: int) -> None:
        try:
            callback(node, usage)
        except Exception as exc:  # a broken watcher must not break the writer that notified it
            with self.transaction() as k:
                k.log.emit(LEVEL_WARNING, f"memtrackfs: notify callback failed: {exc!r}")

    # -- settling: the releases of exited processes ----------------------------------------------

    def close_file(self, key: int) -> None:
        """An open file's release is done (its effects applied): wake whoever waits in ``settle``."""
        with self.lock:
            self.files.close(key)
            self._file_closed.notify_all()

    def settle(self, timeout: float) -> list[FileRecord]:
        """Wait until no open file is held only by processes that have exited, that is until every
        release they caused has been processed; return what is still pending after ``timeout``.

        Whether a holder runs is read from /proc outside the lock; a close wakes the wait."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                entries, closes = self.files.entries(), self.files.closes
            running: dict[ProcessId, bool] = {}  # each holder's /proc read once per pass

            def runs(holder: ProcessId) -> bool:
                if holder not in running:
                    running[holder] = is_running(holder)
                return running[holder]

            pending = [entry for entry in entries if not any(runs(h) for h in entry.holders if h is not None)]
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                return pending
            with self.lock:
                self._file_closed.wait_for(lambda: self.files.closes != closes, remaining)

    def shutdown(self) -> None:
        self._delayed.stop()
