"""Coalesced delayed notifications: the kernel's ``schedule_delayed_work`` for tracker nodes.

Scheduling a node that is already pending does nothing (the work runs once, ``delay`` after the
first change, and reports the total at that moment). One thread serves every pending node.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Callable, Hashable


class DelayedWork:
    """Runs ``fire(key)`` once, ``delay_ms`` after the first ``schedule(key)`` since it last ran.

    Lock order: callers may hold the kernel lock when they call ``schedule``; ``fire`` runs with
    no lock of ours held, so it may take the kernel lock.
    """

    def __init__(self, fire: Callable[[Hashable], None]) -> None:
        self._fire = fire
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Hashable]] = []
        self._pending: set[Hashable] = set()
        self._seq = itertools.count()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def schedule(self, key: Hashable, delay_ms: int) -> None:
        with self._cond:
            if self._stopped or key in self._pending:
                return
            self._pending.add(key)
            heapq.heappush(self._heap, (time.monotonic() + delay_ms / 1000.0, next(self._seq), key))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="delayed-work", daemon=True)
                self._thread.start()
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stopped:
                    return
                _, _, key = heapq.heappop(self._heap)
                # Cleared before running, as the kernel clears PENDING: a change during the
                # callback schedules the work again.
                self._pending.discard(key)
            self._fire(key)
