"""Turns at answering requests: a lock handed over in arrival order.

``threading.Lock`` is not fair: a thread that releases it and asks again at once usually gets it
back before a waiting thread wakes up, so a client pipelining without pause would keep everyone
else waiting. ``TurnLock`` hands the lock to the longest waiter on release.
"""
from __future__ import annotations

import threading
from collections import deque


class TurnLock:
    """A FIFO lock. ``waiting`` (read it, never change it) is not empty while someone waits: the
    holder may end its turn early."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # a leaf: guards the fields below for an instant
        self._held = False
        self.waiting: deque[threading.Lock] = deque()

    def acquire(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            baton = threading.Lock()
            baton.acquire()
            self.waiting.append(baton)
        baton.acquire()  # released by the holder's release(): the lock is ours now

    def release(self) -> None:
        with self._mutex:
            if self.waiting:
                self.waiting.popleft().release()  # still held: handed to the longest waiter
            else:
                self._held = False

    def __enter__(self) -> "TurnLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
