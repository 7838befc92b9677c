"""The mount table: where memtrackfs mounts are, whether they are alive, and their sockets.

A memtrackfs mount's source (the ``fsname`` shown by ``mount`` and /proc/self/mountinfo) is
``memtrackfs:<socket path>``, so any tool can find the driver socket from the mount point.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import tempfile
from typing import NamedTuple, Optional

from memtrackfs.errors import KernelError

SOURCE_PREFIX = "memtrackfs:"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes with the NUL


class MountEntry(NamedTuple):
    """A line of mountinfo (proc(5)), its paths unescaped."""

    mountpoint: str
    fstype: str
    source: str
    device: str = ""  # "major:minor": the same in every namespace that mounts this filesystem
    root: str = ""    # the directory of that filesystem mounted there ("/" unless a bind of a subtree)


def unescape(field: str) -> str:
    """A path as mountinfo writes it (octal escapes for space, tab, newline, backslash), unescaped."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """The mounts of a mountinfo file's text, in its order (a later mount sits on an earlier one)."""
    entries = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 2:
            entries.append(MountEntry(unescape(fields[4]), tail[0], unescape(tail[1]), fields[2],
                                      unescape(fields[3])))
    return entries


def read_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[MountEntry]:
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


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


ANSWERS, STALE, HUNG = "answers", "stale", "hung"
PROBE_SECONDS = 2.0


def probe_mount(mountpoint: str, timeout: float = PROBE_SECONDS) -> str:
    """Whether the filesystem at ``mountpoint`` answers a stat: ``ANSWERS``; ``STALE`` (its FUSE
    daemon died: ENOTCONN); ``HUNG`` (no answer within ``timeout``: its daemon is stopped or stuck).

    The stat runs in a child process, killed if it does not return in time: a stat of a FUSE
    mount whose daemon does not read waits for as long as it takes (killably)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.stat(mountpoint)
            code = 0
        except OSError as exc:
            code = exc.errno or 1
        os._exit(min(code, 255))
    pidfd = os.pidfd_open(pid)
    try:
        answered, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if not answered:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return HUNG
    _, status = os.waitpid(pid, 0)
    return STALE if os.waitstatus_to_exitcode(status) == errno.ENOTCONN else ANSWERS


UNMOUNT_SECONDS = 10.0  # fusermount never needs long: it does not wait for the daemon


def _unmount_command(mountpoint: str, lazy: bool = False) -> list[str]:
    for tool in ("fusermount3", "fusermount"):
        if shutil.which(tool):
            return [tool, "-uz" if lazy else "-u", mountpoint]
    return ["umount", "-l", mountpoint] if lazy else ["umount", mountpoint]


def run_unmount(mountpoint: str, lazy: bool = False) -> None:
    """Unmount ``mountpoint`` with fusermount3 (else fusermount, else umount); ``lazy`` detaches it
    even while it is busy or its daemon does not answer. KernelError if that fails or hangs."""
    command = _unmount_command(mountpoint, lazy)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=UNMOUNT_SECONDS)
    except subprocess.TimeoutExpired:
        raise KernelError(errno.ETIMEDOUT, f"cannot unmount {mountpoint}: {command[0]} did not return in "
                                           f"{UNMOUNT_SECONDS:g} s") from None
    if done.returncode != 0:
        raise KernelError(errno.EBUSY, f"cannot unmount {mountpoint}: {done.stderr.strip() or done.returncode}")


def is_stale(mountpoint: str) -> bool:
    """A FUSE mount whose daemon died: every access fails with ENOTCONN."""
    return probe_mount(mountpoint) == STALE


def mounted_elsewhere(device: str) -> list[int]:
    """Processes in whose mount namespace a filesystem (``major:minor``) is still mounted, one per
    namespace other than ours: what keeps a FUSE filesystem alive after its mount point here is
    unmounted (a private namespace with a bind of it)."""
    seen = {os.stat("/proc/self/ns/mnt").st_ino}
    holders = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            namespace = os.stat(f"/proc/{pid}/ns/mnt").st_ino
            if namespace in seen:
                continue
            seen.add(namespace)
            if any(entry.device == device for entry in read_mounts(f"/proc/{pid}/mountinfo")):
                holders.append(int(pid))
        except OSError:
            continue
    return holders


def listening_pid(socket_path: str) -> Optional[int]:
    """The process listening on the Unix socket ``socket_path``, found through /proc (it need not
    answer: it may be stopped). None if there is none, or it is not ours to see."""
    inodes = set()
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="surrogateescape") as f:
            next(f)
            for line in f:
                fields = line.split(None, 7)
                # Flags 00010000: __SO_ACCEPTCON, a listening socket.
                if len(fields) == 8 and fields[7].rstrip("\n") == socket_path and int(fields[3], 16) & 0x10000:
                    inodes.add(f"socket:[{fields[6]}]")
    except OSError:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")) if inodes else ():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return int(pid)
            except OSError:
                continue
    return None


def runtime_dir() -> str:
    """Where sockets, daemon logs and run directories go: ``$MEMTRACKFS_RUNTIME_DIR`` if set (a
    CI farm running suites side by side gives each its own), else /run/memtrackfs for root,
    ``$XDG_RUNTIME_DIR/memtrackfs`` or ``$TMPDIR/memtrackfs-<uid>`` for a user. Created 0700 if
    missing, and refused unless it is ours (``private_dir``): in /tmp, another user could have
    made it first, with links to the user's files in it."""
    explicit = os.environ.get("MEMTRACKFS_RUNTIME_DIR")
    if explicit:
        path = explicit
    elif os.geteuid() == 0:
        path = "/run/memtrackfs"
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = os.path.join(os.environ["XDG_RUNTIME_DIR"], "memtrackfs")
    else:
        path = os.path.join(tempfile.gettempdir(), f"memtrackfs-{os.geteuid()}")
    return private_dir(path)


def private_dir(path: str) -> str:
    """``path``, a directory of ours that nobody else may write: created (with its missing
    parents) mode 0700, or, if it exists, checked: not a symbolic link, a directory, owned by us,
    not writable by group or others. OSError EPERM, saying what is wrong, otherwise."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        problem = "is a symbolic link" if stat.S_ISLNK(info.st_mode) else "is not a directory"
    elif info.st_uid != os.geteuid():
        problem = f"belongs to uid {info.st_uid}, not to you (uid {os.geteuid()})"
    elif info.st_mode & 0o022:
        problem = f"is writable by others (mode {stat.S_IMODE(info.st_mode):04o})"
    else:
        return path
    raise OSError(errno.EPERM, f"runtime directory {path} {problem}: refusing to use it (remove it, "
                               "or set MEMTRACKFS_RUNTIME_DIR or XDG_RUNTIME_DIR to a directory of yours)")


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
