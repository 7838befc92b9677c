"""A connection acting as a driver: the device nodes it serves and its file operations in flight.

The FUSE thread of a caller sends an event and waits (bounded) for the driver's ``complete``
request, which the connection's reader thread hands over. While a call is in flight the driver
may copy from and to the caller's memory by the call's id.
"""
from __future__ import annotations

import errno
import itertools
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, NamedTuple

from memtrackfs.errors import KernelError
from memtrackfs.model.devices import DeviceNode


class _InFlight(NamedTuple):
    future: Future
    caller_pid: int
    device: str


class DriverEndpoint:
    """Implements ``devices.Driver`` over a socket connection. Its lock is a leaf lock."""

    def __init__(self, name: str, push: Callable[[dict[str, Any]], None]) -> None:
        self.name = name
        self._push = push
        self._lock = threading.Lock()
        self._calls: dict[int, _InFlight] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self.devices: list[DeviceNode] = []

    def call(self, event: dict[str, Any], timeout: float) -> dict[str, Any]:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise KernelError(errno.ENODEV, f"driver {self.name} is gone")
            call_id = next(self._ids)
            self._calls[call_id] = _InFlight(future, event.get("pid", 0), event.get("device", ""))
        try:
            self._push({**event, "call": call_id})
            return future.result(timeout)
        except FutureTimeout:
            raise KernelError(errno.ETIMEDOUT, f"driver {self.name} did not answer {event['event']} "
                                               f"within {timeout:g} s") from None
        finally:
            with self._lock:
                self._calls.pop(call_id, None)

    def caller_pid(self, call_id: int) -> int:
        with self._lock:
            call = self._calls.get(call_id)
        if call is None:
            raise KernelError(errno.ENOENT, f"no call {call_id} in flight (it timed out or completed)")
        return call.caller_pid

    def call_device(self, call_id: int) -> DeviceNode:
        """The device node a call in flight is for."""
        with self._lock:
            call = self._calls.get(call_id)
        node = next((n for n in self.devices if call is not None and n.name == call.device), None)
        if node is None:
            raise KernelError(errno.ENOENT, f"no call {call_id} in flight (it timed out or completed)")
        return node

    def complete(self, call_id: int, reply: dict[str, Any]) -> None:
        with self._lock:
            call = self._calls.get(call_id)
        if call is None:
            raise KernelError(errno.ENOENT, f"no call {call_id} in flight (it timed out or completed)")
        if not call.future.done():
            call.future.set_result(reply)

    def close(self) -> None:
        """The driver disconnected: every waiting caller gets ENODEV now."""
        with self._lock:
            self._closed = True
            calls, self._calls = self._calls, {}
        for call in calls.values():
            if not call.future.done():
                call.future.set_exception(KernelError(errno.ENODEV, f"driver {self.name} disconnected"))
