"""The driver socket: a Unix stream socket speaking newline-delimited JSON (see ``protocol``).

One thread per connection reads requests, answers them in order and sends the replies of each
batch of lines it received in one write (so a pipelining client is not slowed by tiny writes).
A connection's failure never touches another connection or the daemon.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import threading
from collections import deque
from contextlib import contextmanager
from typing import Any, Iterator

from memtrackfs.errors import KernelError
from memtrackfs.kernel import Kernel
from memtrackfs.server.protocol import MAX_LINE, decode_request, encode, error_reply
from memtrackfs.server import ops
from memtrackfs.server.session import HandleRegistry, Session

log = logging.getLogger(__name__)
_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }
_answering = threading.local()  # .pushes: events deferred while this thread answers a batch


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end (SO_PEERCRED)."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


# What is queued for a peer that does not read (a stopped driver or watcher) is capped: past
# this many bytes, the peer is cut off, as if it had died.
MAX_QUEUED_BYTES = 64 << 20


class Connection:
    """One peer. Its thread reads requests and sends their replies; what the server says on its
    own (notify events, calls to a driver) is queued and sent by a writer thread, so no other
    thread ever waits for this peer to read."""

    def __init__(self, server: "DriverServer", sock: socket.socket, peer_pid: int) -> None:
        self.server = server
        self.sock = sock
        self._send_lock = threading.Lock()   # replies and events never interleave on the wire
        self._outbox: deque[bytes] = deque()
        self._outbox_bytes = 0
        self._outbox_cond = threading.Condition()
        self._writer: threading.Thread | None = None
        self._closing = False
        self.session = Session(server.kernel, server.registry, peer_pid, self.push)
        self.session.waiting = self._waiting

    def send(self, data: bytes) -> None:
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass  # the peer is gone; the reader sees EOF and cleans up

    def push(self, message: dict[str, Any]) -> None:
        data = encode(message)
        deferred = getattr(_answering, "pushes", None)
        if deferred is not None:
            deferred.append((self, data))  # queued once the batch is answered (_answer_batch)
        else:
            self.enqueue(data)

    def enqueue(self, data: bytes) -> None:
        with self._outbox_cond:
            if self._closing:
                return
            if self._outbox_bytes + len(data) > MAX_QUEUED_BYTES:
                log.warning("peer %s reads no events: disconnected", self.session.peer_pid)
                self._closing = True
                self.sock.shutdown(socket.SHUT_RDWR)  # its reader sees EOF and cleans up
                return
            self._outbox.append(data)
            self._outbox_bytes += len(data)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="driver-writer", daemon=True)
                self._writer.start()
            self._outbox_cond.notify()

    def _write_loop(self) -> None:
        while True:
            with self._outbox_cond:
                while not self._outbox and not self._closing:
                    self._outbox_cond.wait()
                if not self._outbox:
                    return
                batch = b"".join(self._outbox)
                self._outbox.clear()
                self._outbox_bytes = 0
            self.send(batch)

    def _stop_writer(self) -> None:
        with self._outbox_cond:
            self._closing = True
            self._outbox.clear()
            self._outbox_bytes = 0
            self._outbox_cond.notify()

    def _answer_batch(self, lines: list[bytes]) -> list[bytes]:
        """Answer a batch under the server's answer lock; send the events it caused afterwards.

        One connection at a time answers: two connection threads taking ``Kernel.lock`` request
        by request under the GIL hand the lock over on every request (a futex convoy: three
        context switches per request, 4 pipelined clients got half of one client's throughput).
        Events for watchers are queued after the lock is released.
        """
        pushes: list[tuple[Connection, bytes]] = []
        _answering.pushes = pushes
        try:
            with self.server.answer_lock:
                return [self._answer(line) for line in lines]
        finally:
            _answering.pushes = None
            for connection, data in pushes:
                connection.enqueue(data)

    @contextmanager
    def _waiting(self) -> Iterator[None]:
        """A request of this connection waits for others (settle): they may be answered meanwhile."""
        self.server.answer_lock.release()
        try:
            yield
        finally:
            self.server.answer_lock.acquire()

    def _answer(self, line: bytes) -> bytes:
        request_id = None
        if len(line) > MAX_LINE:  # whole in one read or not, an over-long line is refused
            return encode(error_reply(None, KernelError(errno.E2BIG, f"request line longer than {MAX_LINE} bytes: discarded")))
        try:
            request = decode_request(line)
            request_id = request.get("id")
            reply = ops.handle(self.session, request)
            if reply == {} and type(request_id) is int:
                # Most replies (add, sub, set, ...) carry nothing: the bytes encode() would give,
                # without the JSON encoder (a fifth of a pipelined add's cost).
                return b'{"id":%d,"ok":true}\n' % request_id
            reply["id"] = request_id
            reply["ok"] = True
            return encode(reply)
        except KernelError as exc:
            return encode(error_reply(request_id, exc))
        except Exception as exc:  # a bug must cost one request, not the connection
            log.exception("request failed")
            return encode(error_reply(request_id, KernelError(errno.EIO, f"internal error: {exc!r}")))

    def serve(self) -> None:
        pending = b""
        discarding = False  # inside an over-long line, dropping bytes up to its newline
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    return
                pending += data
                lines = pending.split(b"\n")
                pending = lines.pop()
                if discarding and lines:
                    discarding = False
                    del lines[0]  # the rest of the over-long line
                replies = self._answer_batch([line for line in lines if line.strip()]) if lines else []
                if len(pending) > MAX_LINE:
                    if not discarding:
                        replies.append(encode(error_reply(None, KernelError(
                            errno.E2BIG, f"request line longer than {MAX_LINE} bytes: discarded"))))
                    pending, discarding = b"", True
                if replies:
                    self.send(b"".join(replies))
        except OSError:
            return
        finally:
            try:
                ops.close(self.session)
            finally:
                self._stop_writer()
                self.sock.close()
                self.server.forget(self)


class DriverServer:
    """Accepts connections from the socket's owner (and root) and serves each in a thread."""

    def __init__(self, kernel: Kernel, path: str) -> None:
        self.kernel = kernel
        self.path = path
        self.registry = HandleRegistry()
        self.answer_lock = threading.Lock()  # one connection answers at a time (Connection._answer_batch)
        self._connections: set[Connection] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        if len(os.fsencode(self.path)) > 107:
            raise KernelError(errno.ENAMETOOLONG, f"socket path {self.path} is longer than the 107 bytes "
                                                  "a Unix socket address holds: choose a shorter --socket")
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
        self._remove_stale_socket()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            listener.bind(self.path)
        finally:
            os.umask(old_umask)
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept_loop, name="driver-accept", daemon=True).start()

    def _remove_stale_socket(self) -> None:
        if not os.path.exists(self.path):
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)  # nobody listens: a leftover of a killed daemon
        else:
            raise KernelError(errno.EADDRINUSE, f"another daemon is serving {self.path}")
        finally:
            probe.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # closed
            pid, uid, _ = peer_credentials(sock)
            if uid not in (0, os.geteuid()):
                sock.sendall(encode(error_reply(None, KernelError(
                    errno.EACCES, "only the socket's owner and root may connect"))))
                sock.close()
                continue
            connection = Connection(self, sock, pid)
            with self._lock:
                self._connections.add(connection)
            threading.Thread(target=connection.serve, name=f"driver-{pid}", daemon=True).start()

    def forget(self, connection: Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def close(self) -> None:
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
