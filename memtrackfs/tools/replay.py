"""``memtrackfs replay``: apply a trace to a mount through its driver socket.

The trace's IDs are mapped to the daemon's handles. As in the RFC, a creation that fails leaves
its ID null and later lines on a null ID do nothing (``read`` prints 0); handles of a destroyed
subtree are dead and behave the same. ``show`` prints the tree's file as read through the mount.
Requests that need no answer are pipelined; the replay waits for them before any line whose
output or handle depends on them.
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import Future
from typing import BinaryIO, Iterable, Optional, TextIO

from memtrackfs.bundled import traces
from memtrackfs.client import MemtrackClient, MemtrackError
from memtrackfs.paths import MEMTRACK_DIR
from memtrackfs.tools.trace import TraceOp, parse_trace


class Replayer:
    def __init__(self, client: MemtrackClient, mountpoint: str, out: BinaryIO, err: TextIO) -> None:
        self.client = client
        self.mountpoint = mountpoint
        self.out = out
        self.err = err
        self.handles: dict[int, Optional[int]] = {}   # trace ID -> daemon handle, None when null
        self.root_names: dict[int, str] = {}          # trace ID -> name of its tree's root
        self.context = {"tgid": 1, "pid": 1}          # the oracle's `current` before any `as`
        self._in_flight: list[tuple[TraceOp, Future]] = []

    def run(self, ops: Iterable[TraceOp]) -> None:
        for op in ops:
            getattr(self, "_" + op.op)(op)
        self._settle()

    def _refused(self, op: TraceOp, exc: MemtrackError) -> None:
        if exc.errno_name != "ENOENT":  # a dead handle is the RFC's NULL node: silently nothing
            print(f"replay: line {op.lineno}: {op.op} refused: {exc}", file=self.err)

    def _settle(self) -> None:
        for op, future in self._in_flight:
            try:
                future.result()
            except MemtrackError as exc:
                self._refused(op, exc)
        self._in_flight.clear()

    def _send(self, op: TraceOp, request: str, **fields: object) -> None:
        handle = self.handles.get(op.id)
        if handle is not None:
            self._in_flight.append((op, self.client.submit(request, node=handle, **fields)))

    def _create(self, op: TraceOp, request: str, root_name: str, **fields: object) -> None:
        self._settle()
        try:
            self.handles[op.id] = self.client.call(request, **fields, **self.context)["node"]
            self.root_names[op.id] = root_name
        except MemtrackError as exc:
            self.handles[op.id] = None
            self._refused(op, exc)

    def _as(self, op: TraceOp) -> None:
        self.context = {"tgid": op.id, "pid": op.arg}

    def _root(self, op: TraceOp) -> None:
        self._create(op, "root", op.name, name=op.name)

    def _node(self, op: TraceOp) -> None:
        parent = self.handles.get(op.arg)
        if parent is None:
            self.handles[op.id] = None  # the RFC returns NULL for a NULL parent
            return
        self._create(op, "node", self.root_names[op.arg], parent=parent, name=op.name)

    def _add(self, op: TraceOp) -> None:
        self._send(op, "add", bytes=op.arg, name=op.name, **self.context)

    def _sub(self, op: TraceOp) -> None:
        self._send(op, "sub", bytes=op.arg, name=op.name)

    def _set(self, op: TraceOp) -> None:
        self._send(op, "set", bytes=op.arg)

    def _delay(self, op: TraceOp) -> None:
        self._send(op, "delay", ms=op.arg)

    def _destroy(self, op: TraceOp) -> None:
        self._send(op, "destroy")
        self.handles[op.id] = None

    def _read(self, op: TraceOp) -> None:
        self._settle()
        handle = self.handles.get(op.id)
        usage = 0
        if handle is not None:
            try:
                usage = self.client.call("read", node=handle)["bytes"]
            except MemtrackError as exc:
                self._refused(op, exc)
        self.out.write(f"{usage}\n".encode())

    def _show(self, op: TraceOp) -> None:
        self._settle()
        if self.handles.get(op.id) is None:
            print(f"replay: line {op.lineno}: show of a null or dead ID {op.id}: skipped", file=self.err)
            return
        path = os.path.join(self.mountpoint, MEMTRACK_DIR, self.root_names[op.id])
        with open(path, "rb") as f:
            self.out.write(f.read())


def replay(trace_path: str, mountpoint: str, socket_path: Optional[str] = None) -> int:
    """Replay a trace file, or a trace shipped with memtrackfs given by its name."""
    if not os.path.exists(trace_path) and trace_path in traces():
        trace_path = str(traces()[trace_path])
    with open(trace_path, encoding="utf-8") as f:
        ops = list(parse_trace(f))  # a malformed trace is refused before anything is applied
    client = MemtrackClient(socket_path) if socket_path else MemtrackClient.for_mount(mountpoint)
    with client:
        Replayer(client, mountpoint, sys.stdout.buffer, sys.stderr).run(ops)
    sys.stdout.flush()
    return 0
