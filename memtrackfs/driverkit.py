"""What every driver behind memtrackfs device nodes needs, written once (vpu_sim's drivers and the
tests' drivers use it): a ``DeviceDriver`` connection that registers nodes and answers each
forwarded call.

- Each call (open, ioctl, poll, release) is answered on its own worker thread: a blocking one
  (DQBUF) must not hold up the others, and the socket's reader thread must stay free to deliver
  what those calls wait for.
- The handler's ``OSError`` becomes the call's errno; any other exception is a driver bug: the
  caller gets EIO, as from a kernel driver's failed path, and the kernel log says which call
  failed (level 3, ``<driver>: BUG: ...``).
- ``Call.memory`` is the caller's memory: reads (copy_from_user) are a round trip each; writes
  (copy_to_user) ride on the call's ``complete`` and are done, in order, before the caller is
  answered. ``read_buffer`` reads an mmap()ed buffer as the caller's mapping holds it.
- ``reply`` fields go with the answer: ``mappable`` (the file's mmap regions, after the buffers
  changed), ``revents`` (a poll's answer).
- ``wake(file)`` is one call that never waits: the file's pollers look again.
- ``run()`` serves until SIGTERM/SIGINT or until memtrackfs closes the connection (``stay``, which
  any process that holds a connection open for its lifetime uses too).

The protocol is the README's "The driver socket"; this module only frames it.
"""
from __future__ import annotations

import base64
import errno
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from memtrackfs.client import MemtrackClient, MemtrackError
from memtrackfs.fs.poll import DEFAULT_POLLMASK

LOG_ERR = 3


def stay(client: MemtrackClient, seconds: Optional[float] = None) -> bool:
    """Block for ``seconds`` (None: for good), until SIGTERM/SIGINT, or until memtrackfs closes
    the connection; True if the connection is still up."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    deadline = None if seconds is None else time.monotonic() + seconds
    while not stop.is_set() and not client.closed.is_set():
        left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
        if left <= 0:
            break
        stop.wait(left)
    return not client.closed.is_set()


class UserMemory(Protocol):
    """copy_from_user/copy_to_user on the calling process, as a driver's handlers use it (a
    ``CallerMemory``, or a test's stand-in); failures raise OSError (EFAULT)."""

    def read(self, address: int, size: int) -> bytes: ...

    def write(self, address: int, data: bytes) -> None: ...

    def read_buffer(self, offset: int, size: int) -> bytes:
        """The bytes at mmap ``offset`` of the node, as the caller's mapping holds them."""


class CallerMemory:
    """The memory of the process whose call is being served (a ``UserMemory``)."""

    def __init__(self, client: MemtrackClient, call_id: int) -> None:
        self._client = client
        self._call = call_id
        self._writes: list[dict[str, Any]] = []

    def read(self, address: int, size: int) -> bytes:
        reply = self._client.call("copy_from_user", call=self._call, addr=address, len=size)
        return base64.b64decode(reply["data"])

    def write(self, address: int, data: bytes) -> None:
        self._writes.append({"addr": address, "data": base64.b64encode(data).decode()})

    def read_buffer(self, offset: int, size: int) -> bytes:
        """The bytes at mmap ``offset`` of the call's node, as the caller's mapping holds them."""
        reply = self._client.call("read_buffer", call=self._call, offset=offset, len=size)
        return base64.b64decode(reply["data"])

    def completion(self) -> dict[str, Any]:
        return {"user": self._writes} if self._writes else {}


class OutputError(OSError):
    """A failed call whose argument still goes back to the caller (the extended-control ioctls'
    error_idx): ``output`` rides on the error."""

    def __init__(self, code: int, output: bytes) -> None:
        super().__init__(code, errno.errorcode.get(code, str(code)))
        self.output = output


@dataclass
class Call:
    """One forwarded file operation."""
    event: dict[str, Any]
    memory: CallerMemory
    reply: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.event["event"]

    @property
    def device(self) -> str:
        return self.event["device"]

    @property
    def file(self) -> int:
        return self.event["file"]

    @property
    def tgid(self) -> int:
        return self.event.get("tgid", 0)

    @property
    def pid(self) -> int:
        return self.event.get("pid", 0)

    @property
    def argument(self) -> bytes:
        """An ioctl's ``_IOC_SIZE`` input bytes."""
        return base64.b64decode(self.event.get("in", ""))


class DeviceDriver:
    """A connection serving device nodes. Subclasses answer ``open``/``ioctl``/``poll``/``release``
    (return the output bytes, raise OSError) and may take tracker notifications in ``notify``."""

    name = "driver"
    program = "driver"  # the command serving it: what its lines on stdout start with

    def __init__(self, socket_path: str, *, destroy_on_close: bool = True) -> None:
        self.client = MemtrackClient(socket_path, client=self.name, destroy_on_close=destroy_on_close,
                                     on_event=self._on_event)

    def register(self, node: str, sysfs: Optional[dict[str, str]] = None) -> None:
        """``dev/<node>`` appears; ``sysfs``: its class device (subsystem, label, parent, driver)."""
        self.client.call("register_device", name=node, **({"sysfs": sysfs} if sysfs else {}))

    def log(self, level: int, message: str) -> None:
        self.client.call("log", level=level, message=message[:1024])

    def wake(self, file: int) -> None:
        """The file may answer poll differently now; never waits (a reader-thread caller is fine)."""
        try:
            self.client.submit("wake", file=file)
        except ConnectionError:
            pass  # memtrackfs went away: nobody polls

    # -- the calls -------------------------------------------------------------------------------

    def open(self, call: Call) -> bytes:
        return b""

    def ioctl(self, call: Call) -> bytes:
        raise OSError(errno.ENOTTY, "no such ioctl")

    def poll(self, call: Call) -> bytes:
        # What the kernel answers for a file whose driver has no poll (DEFAULT_POLLMASK).
        call.reply["revents"] = DEFAULT_POLLMASK
        return b""

    def release(self, call: Call) -> bytes:
        return b""

    def notify(self, event: dict[str, Any]) -> None:
        """A tracker ``notify`` event, on the socket's reader thread: must only store."""

    # -- plumbing --------------------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("event") == "notify":
            self.notify(event)
        elif "call" in event:
            threading.Thread(target=self._answer, args=(event,), daemon=True).start()

    def _answer(self, event: dict[str, Any]) -> None:
        call = Call(event, CallerMemory(self.client, event["call"]))
        result: Any = 0
        out = b""
        try:
            out = getattr(self, call.kind)(call)
        except OutputError as exc:
            result, out = errno.errorcode.get(exc.errno, "EIO"), exc.output
        except OSError as exc:
            result = errno.errorcode.get(exc.errno or errno.EIO, "EIO")
        except Exception as exc:  # a driver bug: the caller still gets its answer, as a kernel driver's EIO
            result = "EIO"
            traceback.print_exc()
            try:
                self.log(LOG_ERR, f"{self.name}: BUG: {call.kind} of dev/{event.get('device')} failed: {exc!r}")
            except (MemtrackError, ConnectionError):
                pass
        try:
            self.client.call("complete", call=event["call"], result=result, out=base64.b64encode(out).decode(),
                             **call.memory.completion(), **call.reply)
        except (MemtrackError, ConnectionError):
            pass  # the caller timed out or memtrackfs went away: nobody waits for this answer

    # -- lifetime -------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (0, after ``shutdown`` removed the driver) or until memtrackfs
        closes the connection (1, said on stdout)."""
        if not stay(self.client):
            print(f"{self.program}: memtrackfs closed the connection: exiting", flush=True)
            return 1
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        """Remove the driver cleanly: what it made goes with its connection."""
        self.close()

    def close(self) -> None:
        self.client.close()
