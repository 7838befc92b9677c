"""Coalesced delayed notifications: the kernel's ``schedule_delayed_work`` for tracker nodes.

Scheduling a node that is already pending does nothing (the work runs once, ``delay`` after the
first change, and reports the total at that moment). One thread serves every pending node.
``cancel`` drops pending work at once (``cancel_delayed_work``), so what it would have run on
(a destroyed subtree) is not kept until then.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Callable, Hashable, Iterable


class DelayedWork:
    """Runs ``fire(key)`` once, ``delay_ms`` after the first ``schedule(key)`` since it last ran.

    Lock order: callers may hold the kernel lock when they call ``schedule`` and ``cancel``;
    ``fire`` runs with no lock of ours held, so it may take the kernel lock.
    """

    def __init__(self, fire: Callable[[Hashable], None]) -> None:
        self._fire = fire
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []  # (when, ticket); a cancelled ticket stays until popped
        self._keys: dict[int, Hashable] = {}       # ticket -> key, while pending
        self._pending: dict[Hashable, int] = {}    # key -> its ticket
        self._tickets = itertools.count()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def schedule(self, key: Hashable, delay_ms: int) -> None:
        with self._cond:
            if self._stopped or key in self._pending:
                return
            ticket = next(self._tickets)
            self._pending[key] = ticket
            self._keys[ticket] = key
            heapq.heappush(self._heap, (time.monotonic() + delay_ms / 1000.0, ticket))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="delayed-work", daemon=True)
                self._thread.start()
            self._cond.notify()

    def cancel(self, keys: Iterable[Hashable]) -> None:
        """Forget the pending work of these keys (no reference to them is kept)."""
        with self._cond:
            if not self._pending:
                return
            for key in keys:
                ticket = self._pending.pop(key, None)
                if ticket is not None:
                    del self._keys[ticket]
            if len(self._heap) > 2 * len(self._keys) + 64:
                # Mostly cancelled tickets: drop them, so that the heap stays as small as the work.
                self._heap = [entry for entry in self._heap if entry[1] in self._keys]
                heapq.heapify(self._heap)

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
                _, ticket = heapq.heappop(self._heap)
                key = self._keys.pop(ticket, None)
                if key is None:
                    continue  # cancelled
                # Cleared before running, as the kernel clears PENDING: a change during the
                # callback schedules the work again.
                del self._pending[key]
            self._fire(key)
