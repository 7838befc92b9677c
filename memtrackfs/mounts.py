"""The mount table: where memtrackfs mounts are, whether they are alive, and their sockets.

A memtrackfs mount's source (the ``fsname`` shown by ``mount`` and /proc/self/mountinfo) is
``memtrackfs:<socket path>``, so any tool can find the driver socket from the mount point.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
from typing import NamedTuple, Optional

SOURCE_PREFIX = "memtrackfs:"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes with the NUL


class MountEntry(NamedTuple):
    mountpoint: str
    fstype: str
    source: str


def unescape(field: str) -> str:
    """A path as mountinfo writes it (octal escapes for space, tab, newline, backslash), unescaped."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def read_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[MountEntry]:
    entries = []
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) >= 5 and len(tail) >= 2:
                entries.append(MountEntry(unescape(fields[4]), tail[0], unescape(tail[1])))
    return entries


def find_mount(mountpoint: str) -> Optional[MountEntry]:
    """The topmost mount at this path, if any."""
    path = os.path.abspath(mountpoint)
    found = None
    for entry in read_mounts():
        if entry.mountpoint == path:
            found = entry
    return found


def is_memtrackfs(entry: Optional[MountEntry]) -> bool:
    return entry is not None and entry.fstype.startswith("fuse") and entry.source.startswith(SOURCE_PREFIX)


def is_stale(mountpoint: str) -> bool:
    """A FUSE mount whose daemon died: every access fails with ENOTCONN."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def runtime_dir() -> str:
    """Where sockets, daemon logs and run directories go: ``$MEMTRACKFS_RUNTIME_DIR`` if set (a
    CI farm running suites side by side gives each its own), else /run/memtrackfs for root."""
    explicit = os.environ.get("MEMTRACKFS_RUNTIME_DIR")
    if explicit:
        return explicit
    if os.geteuid() == 0:
        return "/run/memtrackfs"
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/memtrackfs-{os.geteuid()}"
    return os.path.join(base, "memtrackfs") if "XDG_RUNTIME_DIR" in os.environ else base


def default_socket_path(mountpoint: str) -> str:
    """``/run/memtrackfs/tmp-memtrackfs.sock`` for ``/tmp/memtrackfs`` (a hash if too long)."""
    path = os.path.abspath(mountpoint)
    name = _SAFE.sub("_", path.strip("/").replace("/", "-")) or "root"
    sock = os.path.join(runtime_dir(), name + ".sock")
    if len(sock.encode()) > _SUN_PATH_MAX:
        sock = os.path.join(runtime_dir(), hashlib.sha1(path.encode()).hexdigest()[:16] + ".sock")
    return sock


def log_path_for_socket(socket_path: str) -> str:
    """Where a daemon serving ``socket_path`` writes its stderr: beside it, ``.sock`` -> ``.log``."""
    return os.path.splitext(socket_path)[0] + ".log"


def memtrackfs_mounts() -> list[MountEntry]:
    return [entry for entry in read_mounts() if is_memtrackfs(entry)]


def find_socket(mountpoint: Optional[str] = None) -> str:
    """The driver socket of the mount at ``mountpoint``; without one, ``$MEMTRACKFS_SOCKET`` (set
    inside ``memtrackfs run``), else the socket of the one memtrackfs mount there is."""
    if mountpoint is not None:
        return socket_for_mount(mountpoint)
    explicit = os.environ.get("MEMTRACKFS_SOCKET")
    if explicit:
        return explicit
    mounts = memtrackfs_mounts()
    if len(mounts) != 1:
        found = ", ".join(entry.mountpoint for entry in mounts) or "none"
        raise OSError(errno.ENOENT, f"give --mount MNT: {len(mounts)} memtrackfs mounts here ({found})")
    return mounts[0].source[len(SOURCE_PREFIX):]


def socket_for_mount(mountpoint: str) -> str:
    """The driver socket of the memtrackfs mounted at ``mountpoint``; OSError if there is none."""
    entry = find_mount(mountpoint)
    if not is_memtrackfs(entry):
        raise OSError(errno.ENOENT, f"{mountpoint} is not a memtrackfs mount point "
                                    "(mount it with `memtrackfs mount`)")
    return entry.source[len(SOURCE_PREFIX):]
