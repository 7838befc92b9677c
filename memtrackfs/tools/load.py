"""``memtrackfs load``: recreate a captured board's state (``memtrackfs capture``) in a mount.

Everything is checked before anything changes (a malformed file in the capture is an error
naming it). Then a process of its own connects to the mount's socket and applies each kind of
``filekinds.KINDS``: the trees, the dma-bufs with their attachments, references and inode
numbers, Rockchip's peak, the CMA heap's usage. That process holds the state, as processes hold
dma-buf fds on the board: it stays (its pid is printed) until SIGTERM or until the mount goes,
and what it made goes with it; a load that fails half-way takes back what it did.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional

from memtrackfs.client import MemtrackClient
from memtrackfs.driverkit import stay
from memtrackfs.mounts import socket_for_mount
from memtrackfs.tools.capture import load_capture
from memtrackfs.tools.filekinds import KINDS, FileKind


class SocketLoader:
    """The ``filekinds.Loader`` of a mount: its socket (one connection, which holds everything)."""

    def __init__(self, socket_path: str, mount: str) -> None:
        self.client = MemtrackClient(socket_path, client="memtrackfs load", destroy_on_close=True)
        self.mount = mount
        self.placed: list[tuple[int, int]] = []
        self.notes: list[str] = []
        self.calls = 0

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        self.calls += 1
        return self.client.call(op, **fields)

    def note(self, text: str) -> None:
        self.notes.append(text)


def plan(data: dict[str, Any]) -> list[tuple[FileKind, Any]]:
    """What each kind will recreate, parsed from the capture (ValueError naming a bad file)."""
    steps = []
    for kind in KINDS:
        if kind.apply is None:
            continue
        parsed = kind.parse(data["files"])
        if parsed is not None:
            steps.append((kind, parsed))
    return steps


def _summary(loader: SocketLoader) -> dict[str, Any]:
    roots = loader.call("roots")["roots"]
    buffers = loader.call("buffers")
    return {"roots": [root["name"] for root in roots], "buffers": len(buffers["buffers"]), "total": buffers["total"],
            "notes": loader.notes, "pid": os.getpid()}


def _apply(steps: list[tuple[FileKind, Any]], socket_path: str, mount: str) -> SocketLoader:
    loader = SocketLoader(socket_path, mount)
    try:
        for kind, parsed in steps:
            kind.apply(loader, parsed)
    except BaseException:
        loader.client.close()  # destroy_on_close: what was made so far goes
        raise
    return loader


def _hold(loader: SocketLoader) -> None:
    """Keep the connection, and with it the loaded state, until SIGTERM/SIGINT or the mount goes."""
    stay(loader.client)
    loader.client.close()


def _report(capture_path: str, mount: str, summary: dict[str, Any]) -> None:
    roots = ", ".join(summary["roots"]) or "none"
    print(f"memtrackfs: loaded {capture_path} into {mount}: tracker roots {roots}; {summary['buffers']} dma-bufs, "
          f"{summary['total'] >> 10} KiB; held by pid {summary['pid']} (SIGTERM it to unload)")
    for note in summary["notes"]:
        print(f"memtrackfs: load: {note}", file=sys.stderr)


def load(capture_path: str, mount: str, foreground: bool = False) -> int:
    steps = plan(load_capture(capture_path))
    socket_path = socket_for_mount(mount)
    if foreground:
        loader = _apply(steps, socket_path, mount)
        _report(capture_path, mount, _summary(loader))
        _hold(loader)
        return 0
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the holder
        os.close(read_end)
        os.setsid()
        _holder(steps, socket_path, mount, write_end)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        status = pipe.readline().decode()
    if status.startswith("ok "):
        _report(capture_path, mount, json.loads(status[3:]))
        return 0
    os.waitpid(child, 0)
    print(f"memtrackfs: load: {status[6:].strip() or 'the loading process died'} (nothing was left loaded)",
          file=sys.stderr)
    return 1


def _holder(steps: list[tuple[FileKind, Any]], socket_path: str, mount: str, report: int) -> None:  # pragma: no cover
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    loader: Optional[SocketLoader] = None
    try:
        loader = _apply(steps, socket_path, mount)
        os.write(report, f"ok {json.dumps(_summary(loader))}\n".encode())
    except BaseException as exc:
        os.write(report, f"error {exc}\n".encode())
        os._exit(1)
    os.close(report)
    _hold(loader)
    os._exit(0)
