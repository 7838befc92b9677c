"""The driver socket: a Unix stream socket speaking newline-delimited JSON (see ``protocol``).

One thread per connection reads requests, answers them in order, and sends their replies itself:
a peer that does not read its replies stops its own thread, nobody else's. What one connection
can pin or take is bounded (README "Limits of the socket"):
- replies: a connection answers until it has ``MAX_REPLY_BYTES`` unsent, then sends them before
  reading or answering more (backpressure: a peer that never reads pins at most that, plus one
  reply);
- turns: connections answer in turns (``DriverServer.turns``, a FIFO lock); a turn ends after
  ``TURN_SECONDS`` when another connection waits, so a flood cannot hold everyone up;
- events the server sends on its own (notify, calls to a driver) wait in the peer's outbox for
  its writer thread; while over ``OUTBOX_PAUSE`` the peer's own requests wait (it is not
  reading what it asked for), and past ``MAX_QUEUED_BYTES`` the peer is cut off;
- connections: at most ``MAX_CONNECTIONS`` in all and ``MAX_CONNECTIONS_PER_UID`` per user;
  more are refused with a clear error. The accept loop survives every per-connection error and
  backs off while the daemon is out of file descriptors.
A connection's failure never touches another connection or the daemon.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections import Counter, deque
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from memtrackfs.errors import KernelError
from memtrackfs.kernel import Kernel
from memtrackfs.server import ops
from memtrackfs.server.protocol import (
    MAX_LINE,
    LineReader,
    RequestError,
    decode_request,
    encode,
    error_reply,
)
from memtrackfs.server.session import HandleRegistry, Session
from memtrackfs.server.turns import TurnLock

log = logging.getLogger(__name__)
_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }
_answering = threading.local()  # .pushes: events deferred while this thread answers a turn

MAX_QUEUED_BYTES = 16 << 20   # events queued for a peer that does not read: past this, cut off
OUTBOX_PAUSE = 1 << 20        # ... past this, the peer's own requests wait for it to read
MAX_REPLY_BYTES = 1 << 20     # replies answered and not yet sent, per connection
TURN_SECONDS = 0.005          # how long one connection answers while another waits
MAX_CONNECTIONS = 512
MAX_CONNECTIONS_PER_UID = 256
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end (SO_PEERCRED)."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def _too_long() -> bytes:
    return encode(error_reply(None, KernelError(errno.E2BIG, f"request line longer than {MAX_LINE} bytes: discarded")))


class Connection:
    """One peer. Its thread reads requests and sends their replies; what the server says on its
    own (notify events, calls to a driver) is queued and sent by a writer thread, so no other
    thread ever waits for this peer to read."""

    def __init__(self, server: "DriverServer", sock: socket.socket, peer_pid: int, peer_uid: int) -> None:
        self.server = server
        self.sock = sock
        self.peer_uid = peer_uid
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
            deferred.append((self, data))  # queued once the turn is over (_answer_turn)
        else:
            self.enqueue(data)

    def enqueue(self, data: bytes) -> None:
        with self._outbox_cond:
            if self._closing:
                return
            if self._outbox_bytes + len(data) > MAX_QUEUED_BYTES:
                log.warning("peer %s reads no events: disconnected", self.session.peer_pid)
                self._closing = True
                self._outbox_cond.notify_all()
                self.sock.shutdown(socket.SHUT_RDWR)  # its reader sees EOF and cleans up
                return
            self._outbox.append(data)
            self._outbox_bytes += len(data)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="driver-writer", daemon=True)
                self._writer.start()
            self._outbox_cond.notify_all()

    def _write_loop(self) -> None:
        while True:
            with self._outbox_cond:
                while not self._outbox and not self._closing:
                    self._outbox_cond.wait()
                if not self._outbox:
                    return
                batch = b"".join(self._outbox)
                self._outbox.clear()
            self.send(batch)
            with self._outbox_cond:
                self._outbox_bytes -= len(batch)
                self._outbox_cond.notify_all()  # a reader waiting in _wait_for_outbox

    def _wait_for_outbox(self) -> None:
        """Backpressure: while this peer has not read the events it caused, read no more from it."""
        with self._outbox_cond:
            while self._outbox_bytes > OUTBOX_PAUSE and not self._closing:
                self._outbox_cond.wait()

    def _stop_writer(self) -> None:
        with self._outbox_cond:
            self._closing = True
            self._outbox.clear()
            self._outbox_bytes = 0
            self._outbox_cond.notify_all()

    def _answer_turn(self, lines: list[Optional[bytes]], start: int) -> tuple[list[bytes], int]:
        """Answer lines from ``start`` in one turn; return the replies and where to go on.

        A turn ends when the replies reach ``MAX_REPLY_BYTES`` (they are sent before more is
        answered), or after ``TURN_SECONDS`` while another connection waits for its turn. One
        connection answers at a time: two connection threads taking ``Kernel.lock`` request by
        request under the GIL hand the lock over on every request (a futex convoy: 4 pipelined
        clients got half of one client's throughput). Events for watchers are queued after the
        turn.
        """
        pushes: list[tuple[Connection, bytes]] = []
        replies: list[bytes] = []
        size = 0
        turns = self.server.turns
        waiting, answer, append = turns.waiting, self._answer, replies.append
        _answering.pushes = pushes
        try:
            with turns:
                deadline = time.monotonic() + TURN_SECONDS
                for index in range(start, len(lines)):
                    line = lines[index]
                    if line is None:
                        reply = _too_long()
                    elif line.strip():
                        reply = answer(line)
                    else:
                        continue
                    append(reply)
                    size += len(reply)
                    if size >= MAX_REPLY_BYTES or (waiting and time.monotonic() > deadline):
                        index += 1
                        break
                else:
                    index = len(lines)
        finally:
            _answering.pushes = None
            for connection, data in pushes:
                connection.enqueue(data)
        return replies, index

    @contextmanager
    def _waiting(self) -> Iterator[None]:
        """A request of this connection waits for others (settle): they may be answered meanwhile."""
        self.server.turns.release()
        try:
            yield
        finally:
            self.server.turns.acquire()

    def _answer(self, line: bytes) -> bytes:
        request_id = None
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
        except RequestError as exc:
            return encode(error_reply(exc.request_id, exc))
        except KernelError as exc:
            return encode(error_reply(request_id, exc))
        except Exception as exc:  # a bug must cost one request, not the connection
            log.exception("request failed")
            return encode(error_reply(request_id, KernelError(errno.EIO, f"internal error: {exc!r}")))

    def serve(self) -> None:
        reader = LineReader()
        try:
            while True:
                self._wait_for_outbox()
                data = self.sock.recv(1 << 16)
                if not data:
                    return
                lines = reader.feed(data)
                done = 0
                while done < len(lines):
                    replies, done = self._answer_turn(lines, done)
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
        self.turns = TurnLock()  # one connection answers at a time (Connection._answer_turn)
        self._connections: set[Connection] = set()
        self._per_uid: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._closing = False

    def start(self) -> None:
        if len(os.fsencode(self.path)) > 107:
            raise KernelError(errno.ENAMETOOLONG, f"socket path {self.path} is longer than the 107 bytes "
                                                  "a Unix socket address holds: choose a shorter --socket")
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        claim_socket_path(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            listener.bind(self.path)
        finally:
            os.umask(old_umask)
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), name="driver-accept", daemon=True).start()

    def _accept_loop(self, listener: socket.socket) -> None:
        """Accept until the socket is closed; no error of one connection ends the loop."""
        backoff = 0.0
        while not self._closing:
            try:
                sock, _ = listener.accept()
            except OSError as exc:
                if self._closing or exc.errno in (errno.EBADF, errno.EINVAL):
                    return  # closed
                if exc.errno in _OUT_OF_FDS:
                    # Out of descriptors: the peers wait in the backlog until some are closed.
                    if not backoff:
                        log.warning("cannot accept connections: %s; retrying", exc.strerror)
                    backoff = min(1.0, max(0.01, backoff * 2))
                    time.sleep(backoff)
                continue  # ECONNABORTED, EPROTO, EINTR...: that peer only
            backoff = 0.0
            try:
                self._admit(sock)
            except Exception:  # a setup error (a peer gone already, no thread to spare) costs that peer
                log.exception("could not set up a connection")
                sock.close()

    def _admit(self, sock: socket.socket) -> None:
        pid, uid, _ = peer_credentials(sock)
        if uid not in (0, os.geteuid()):
            _refuse(sock, KernelError(errno.EACCES, "only the socket's owner and root may connect"))
            return
        with self._lock:
            refusal = None
            if len(self._connections) >= MAX_CONNECTIONS or self._per_uid[uid] >= MAX_CONNECTIONS_PER_UID:
                refusal = KernelError(errno.ECONNREFUSED, (
                    f"too many connections ({len(self._connections)} in all, {self._per_uid[uid]} from uid {uid}; "
                    f"at most {MAX_CONNECTIONS} and {MAX_CONNECTIONS_PER_UID} per user): close some"))
        if refusal is not None:
            _refuse(sock, refusal)
            return
        # Made outside the table's lock, a leaf (README "Locking" 5): the session reads /proc and
        # takes Kernel.lock. Only this thread admits, so the counts checked above can only fall.
        connection = Connection(self, sock, pid, uid)
        with self._lock:
            self._connections.add(connection)
            self._per_uid[uid] += 1
        try:
            threading.Thread(target=connection.serve, name=f"driver-{pid}", daemon=True).start()
        except BaseException:
            self.forget(connection)
            self.kernel.close_file(connection.session.file_key)  # it will never end by itself
            raise

    def forget(self, connection: Connection) -> None:
        with self._lock:
            if connection in self._connections:
                self._connections.discard(connection)
                self._per_uid[connection.peer_uid] -= 1
                if not self._per_uid[connection.peer_uid]:
                    del self._per_uid[connection.peer_uid]

    def close(self) -> None:
        self._closing = True
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


def claim_socket_path(path: str) -> None:
    """Make way for the socket at ``path``: remove a leftover socket of ours that nobody serves;
    refuse anything else there (a file, a link, another user's socket, a live daemon's)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
        what = "a socket of uid %d" % info.st_uid if stat.S_ISSOCK(info.st_mode) else (
            "a symbolic link" if stat.S_ISLNK(info.st_mode) else "a directory" if stat.S_ISDIR(info.st_mode)
            else "a file")
        raise KernelError(errno.EEXIST, f"{path} exists and is {what}, not a socket of ours: refusing to replace "
                                        "it (choose another --socket)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a leftover of a killed daemon
    else:
        raise KernelError(errno.EADDRINUSE, f"another daemon is serving {path}")
    finally:
        probe.close()


def _refuse(sock: socket.socket, refusal: KernelError) -> None:
    """Tell a peer why it is not served, without waiting for it (it may be gone already)."""
    try:
        sock.setblocking(False)
        sock.send(encode(error_reply(None, refusal)))
    except OSError:
        pass
    finally:
        sock.close()
