"""A connection acting as a driver: the device nodes it serves and its file operations in flight.

The FUSE thread of a caller sends an event and waits (bounded) for the driver's ``complete``
request, which the connection's reader thread hands over. While a call is in flight the driver
may copy from and to the caller's memory by the call's id.

A call the caller stopped waiting for (it timed out) is remembered for a while, so that its late
``complete`` is accepted and, for an open the driver did make, answered with a ``release`` of
that file: nobody will ever close it, and the driver must free what it made for it.
"""
from __future__ import annotations

import errno
import itertools
import threading
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, NamedTuple, Optional

from memtrackfs.errors import KernelError
from memtrackfs.model.devices import DeviceNode

ABANDONED_KEPT = 4096  # timed-out calls whose late complete is still recognised, per driver


class _InFlight(NamedTuple):
    future: Future
    event: dict[str, Any]  # what the caller sent: its pid, device, file, ...


class DriverEndpoint:
    """Implements ``devices.Driver`` over a socket connection. Its lock is a leaf lock."""

    def __init__(self, name: str, push: Callable[[dict[str, Any]], None]) -> None:
        self.name = name
        self._push = push
        self._lock = threading.Lock()
        self._calls: dict[int, _InFlight] = {}
        self._abandoned: OrderedDict[int, dict[str, Any]] = OrderedDict()  # call -> its event
        self._ids = itertools.count(1)
        self._closed = False
        self.devices: list[DeviceNode] = []
        self.warned: set[tuple[str, str]] = set()  # (event, errno) already reported in the kernel log

    def call(self, event: dict[str, Any], timeout: float) -> dict[str, Any]:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise KernelError(errno.ENODEV, f"driver {self.name} is gone")
            call_id = next(self._ids)
            self._calls[call_id] = _InFlight(future, event)
        try:
            self._push({**event, "call": call_id})
            return future.result(timeout)
        except FutureTimeout:
            with self._lock:
                if future.done():  # completed while we gave up: take the answer after all
                    return future.result()
                self._abandon(call_id, event)
            raise KernelError(errno.ETIMEDOUT, f"driver {self.name} did not answer {event['event']} "
                                               f"within {timeout:g} s") from None
        finally:
            with self._lock:
                self._calls.pop(call_id, None)

    def _abandon(self, call_id: int, event: dict[str, Any]) -> None:
        """Remember a call nobody waits for (under ``_lock``); the oldest are forgotten. Only what
        identifies it is kept (an ioctl's event carries its argument)."""
        self._abandoned[call_id] = {key: event.get(key) for key in ("event", "device", "file")}
        if len(self._abandoned) > ABANDONED_KEPT:
            self._abandoned.popitem(last=False)

    def _find(self, call_id: int) -> tuple[Optional[_InFlight], dict[str, Any]]:
        with self._lock:
            call = self._calls.get(call_id)
            event = call.event if call is not None else self._abandoned.get(call_id)
        if event is None:
            raise KernelError(errno.ENOENT, f"no call {call_id} in flight (it timed out long ago or completed)")
        return call, event

    def event_of(self, call_id: int) -> dict[str, Any]:
        """The event of a call in flight or abandoned (ENOENT if neither)."""
        return self._find(call_id)[1]

    def _in_flight(self, call_id: int) -> dict[str, Any]:
        """The event of a call whose caller still waits (ENOENT otherwise)."""
        with self._lock:
            call = self._calls.get(call_id)
        if call is None:
            raise KernelError(errno.ENOENT, f"no call {call_id} in flight (it timed out or completed)")
        return call.event

    def caller_pid(self, call_id: int) -> int:
        return self._in_flight(call_id).get("pid", 0)

    def call_device(self, call_id: int) -> DeviceNode:
        """The device node a call in flight is for."""
        name = self._in_flight(call_id).get("device", "")
        node = next((n for n in self.devices if n.name == name), None)
        if node is None:
            raise KernelError(errno.ENOENT, f"no call {call_id} in flight (it timed out or completed)")
        return node

    def complete(self, call_id: int, reply: dict[str, Any]) -> bool:
        """Hand the driver's answer to its caller; False if the caller had given up already."""
        call, event = self._find(call_id)
        if call is not None:
            if not call.future.done():
                call.future.set_result(reply)
            return True
        with self._lock:
            if self._abandoned.pop(call_id, None) is None:
                raise KernelError(errno.ENOENT, f"call {call_id} was completed already")
        if event["event"] == "open" and not reply["result"]:
            # The open succeeded after its caller was told ETIMEDOUT: no fd holds this file, so
            # release it now, as the kernel releases a file it could not hand out.
            self._post({"event": "release", "device": event.get("device"), "file": event.get("file")})
        return False

    def _post(self, event: dict[str, Any]) -> None:
        """Send a call that nobody waits for; its complete is accepted and dropped."""
        with self._lock:
            if self._closed:
                return
            call_id = next(self._ids)
            self._abandon(call_id, event)
        self._push({**event, "call": call_id})

    def close(self) -> None:
        """The driver disconnected: every waiting caller gets ENODEV now."""
        with self._lock:
            self._closed = True
            calls, self._calls = self._calls, {}
            self._abandoned.clear()
        for call in calls.values():
            if not call.future.done():
                call.future.set_exception(KernelError(errno.ENODEV, f"driver {self.name} disconnected"))
