"""Python client of the driver socket.

    from memtrackfs.client import MemtrackClient
    with MemtrackClient.for_mount("/tmp/memtrackfs", client="mytool") as mt:
        root = mt.call("root", name="my-device")["node"]
        mt.call("add", node=root, bytes=4096, name="fw")

``call`` waits for the reply; ``submit`` returns a ``Future`` so many requests can be in flight
(pipelining). A refused request raises ``MemtrackError`` (an ``OSError`` with the server's errno).
Events the server pushes (``{"event": "notify", ...}``) go to ``on_event`` if given, else to the
``events`` queue. A background thread reads the socket; calls are safe from any thread.
"""
from __future__ import annotations

import errno
import itertools
import json
import queue
import socket
import threading
import traceback
from concurrent.futures import Future
from typing import Any, Callable, Optional

from memtrackfs.mounts import socket_for_mount

CLOSE_WAIT = 5.0  # seconds close() waits for the daemon to release what the connection held


class MemtrackError(OSError):
    """A request the daemon refused: ``errno`` (number), ``errno_name`` and the daemon's sentence."""

    def __init__(self, errno_name: str, message: str) -> None:
        super().__init__(getattr(errno, errno_name, errno.EIO), message)
        self.errno_name = errno_name

    def __str__(self) -> str:
        return f"{self.errno_name}: {self.strerror}"


class MemtrackClient:
    def __init__(self, socket_path: str, *, client: str = "", destroy_on_close: bool = False,
                 on_event: Optional[Callable[[dict[str, Any]], None]] = None) -> None:
        self.socket_path = socket_path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(socket_path)
        except OSError as exc:
            self._sock.close()
            raise ConnectionError(exc.errno, f"no memtrackfs daemon answers at {socket_path} "
                                             f"({exc.strerror}); is the mount running?") from None
        self.events: "queue.Queue[dict[str, Any]]" = queue.Queue()
        self._on_event = on_event or self.events.put
        self._ids = itertools.count(1)
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()        # guards _pending and _closed
        self._send_lock = threading.Lock()   # one request on the wire at a time
        self._closed: Optional[BaseException] = None
        self._refusal: Optional[MemtrackError] = None  # why the daemon refused us, before hello
        self._greeted = False
        self.closed = threading.Event()  # set when the connection ends, for whatever reason
        self._reader = threading.Thread(target=self._read_loop, name="memtrack-client", daemon=True)
        self._reader.start()
        self.server = self.call("hello", client=client, destroy_on_close=destroy_on_close)
        self._greeted = True

    @classmethod
    def for_mount(cls, mountpoint: str, **kwargs: Any) -> "MemtrackClient":
        """Connect to the daemon of the memtrackfs mounted at ``mountpoint``."""
        return cls(socket_for_mount(mountpoint), **kwargs)

    def submit(self, op: str, **fields: Any) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed is not None:
                if self._refusal is not None:
                    raise self._closed
                raise ConnectionError(errno.ENOTCONN, f"connection to {self.socket_path} is closed: {self._closed}")
            request_id = next(self._ids)
            self._pending[request_id] = future
        data = (json.dumps({"id": request_id, "op": op, **fields}) + "\n").encode()
        # Not under ``_lock``: a send that waits for the daemon to read must not stop the reader
        # thread (which takes ``_lock``) from draining the replies the daemon waits to send.
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError as exc:
            with self._lock:
                self._pending.pop(request_id, None)
            self._join_reader(1)  # it may have read why the daemon closed the connection
            if self._refusal is not None and self._closed is not None:
                raise self._closed from None
            raise ConnectionError(exc.errno, f"memtrackfs daemon went away: {exc.strerror}") from None
        return future

    def call(self, op: str, timeout: Optional[float] = 30.0, **fields: Any) -> dict[str, Any]:
        return self.submit(op, **fields).result(timeout)

    def _read_loop(self) -> None:
        reason: BaseException = ConnectionError(errno.ECONNRESET, "memtrackfs daemon closed the connection")
        try:
            with self._sock.makefile("rb") as stream:
                for line in stream:
                    self._dispatch(json.loads(line))
        except (OSError, ValueError) as exc:
            reason = ConnectionError(errno.ECONNRESET, f"connection to memtrackfs lost: {exc}")
        if self._refusal is not None:
            # The daemon said why it closed (too many connections, not the socket's owner).
            reason = ConnectionError(self._refusal.errno, f"memtrackfs refused the connection: {self._refusal}")
        with self._lock:
            self._closed = reason
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(reason)
        self.closed.set()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "event" in message:
            try:
                self._on_event(message)
            except Exception:  # a bug in the handler must not stop the replies of every call
                traceback.print_exc()
            return
        with self._lock:
            future = self._pending.pop(message.get("id"), None)
        if future is None:
            # No request of ours: before hello's reply, why the daemon refuses the connection
            # (too many, not the socket's owner); later, the E2BIG answer to an over-long line.
            if not message.get("ok") and not self._greeted:
                self._refusal = MemtrackError(message.get("errno", "EIO"), message.get("error", ""))
            return
        if message.get("ok"):
            future.set_result(message)
        else:
            future.set_exception(MemtrackError(message.get("errno", "EIO"), message.get("error", "")))

    def close(self) -> None:
        """End the connection as the last close of a dma-buf or device fd does: return once the
        daemon has let go of everything the connection held (it closes its end only after that),
        so a tool that closes and exits leaves nothing behind for the next reader to see. Waits at
        most ``CLOSE_WAIT`` seconds for a daemon that does not answer (stopped, gone)."""
        try:
            self._sock.shutdown(socket.SHUT_WR)  # the daemon reads EOF, releases, then closes
        except OSError:
            pass
        else:
            if threading.current_thread() is not self._reader:  # not from an on_event handler
                self.closed.wait(CLOSE_WAIT)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._join_reader(5)

    def _join_reader(self, timeout: float) -> None:
        """Wait for the reader thread to end, unless this is it (a call from an event handler)."""
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout)

    def __enter__(self) -> "MemtrackClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
