"""Mount lifecycle: start the daemon (FUSE + driver socket), recover stale mounts, unmount.

``mount`` returns once the mount is usable: the daemon reports readiness through a pipe from
libfuse's ``init`` callback, which runs when the kernel has the mount. libfuse itself turns
SIGTERM, SIGINT and SIGHUP (and ``fusermount -u``) into a clean exit of the FUSE loop, after which
the daemon closes its socket and removes the socket file.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from memtrackfs.errors import KernelError
from memtrackfs.model.boards import DEFAULT_BOARD
from memtrackfs.model.heaps import HeapSpec
from memtrackfs.mounts import SOURCE_PREFIX, find_mount, is_memtrackfs, is_stale, log_path_for_socket

log = logging.getLogger("memtrackfs")


def _unmount_command(mountpoint: str, lazy: bool = False) -> list[str]:
    for tool in ("fusermount3", "fusermount"):
        if shutil.which(tool):
            return [tool, "-uz" if lazy else "-u", mountpoint]
    return ["umount", "-l", mountpoint] if lazy else ["umount", mountpoint]


def _run_unmount(mountpoint: str, lazy: bool = False) -> None:
    done = subprocess.run(_unmount_command(mountpoint, lazy), capture_output=True, text=True)
    if done.returncode != 0:
        raise KernelError(errno.EBUSY, f"cannot unmount {mountpoint}: {done.stderr.strip() or done.returncode}")


def prepare_mountpoint(mountpoint: str) -> Optional[str]:
    """Make the mount point usable; return a note if a stale mount had to be cleared."""
    entry = find_mount(mountpoint)
    if entry is not None and is_stale(mountpoint):
        # "Transport endpoint is not connected": its daemon died. Detach it and mount afresh.
        _run_unmount(mountpoint, lazy=True)
        note = f"recovered stale mount at {mountpoint} (its daemon had died)"
    elif is_memtrackfs(entry):
        raise KernelError(errno.EBUSY, f"{mountpoint} is already a live memtrackfs mount "
                                       f"(socket {entry.source[len(SOURCE_PREFIX):]})")
    else:
        note = None
    os.makedirs(mountpoint, exist_ok=True)
    if not os.path.isdir(mountpoint):
        raise KernelError(errno.ENOTDIR, f"{mountpoint} is not a directory")
    return note


@dataclass(frozen=True)
class MountOptions:
    """Everything `memtrackfs mount` can be told, besides where to mount."""

    socket_path: str
    allow_other: bool = False
    driver_timeout: float = 5.0          # seconds a device-node call waits for its driver
    heaps: Optional[Sequence[HeapSpec]] = None  # None: the board's
    board: str = DEFAULT_BOARD
    bsp: Optional[str] = None            # None: the board's own


def serve(mountpoint: str, options: MountOptions, on_ready: Callable[[], None]) -> None:
    """Run the daemon in this process until the mount goes away."""
    # Imported here: loading libfuse is the daemon's business, not that of `memtrackfs umount`.
    from memtrackfs.fs.adapter import MemtrackOperations, fuse
    from memtrackfs.fs.tree import build_tree
    from memtrackfs.kernel import Kernel
    from memtrackfs.model.boards import board
    from memtrackfs.server.server import DriverServer

    if "," in options.socket_path:
        raise KernelError(errno.EINVAL, f"socket path {options.socket_path!r} may not contain ','")
    kernel = Kernel(driver_timeout=options.driver_timeout, heaps=options.heaps,
                    board=board(options.board, options.bsp))
    server = DriverServer(kernel, options.socket_path)
    server.start()
    try:
        extra = {"allow_other": True} if options.allow_other else {}
        fuse.FUSE(MemtrackOperations(kernel, build_tree(kernel), on_ready), mountpoint,
                  foreground=True, raw_fi=True, default_permissions=True,
                  fsname=SOURCE_PREFIX + options.socket_path, subtype="memtrackfs",
                  # Names come and go with the model (roots, buffers, device nodes): no caching.
                  entry_timeout=0, attr_timeout=0, negative_timeout=0, **extra)
    finally:
        server.close()
        kernel.shutdown()


def mount(mountpoint: str, options: MountOptions, foreground: bool) -> int:
    mountpoint = os.path.abspath(mountpoint)
    note = prepare_mountpoint(mountpoint)
    if note:
        print(f"memtrackfs: {note}", file=sys.stderr)

    def announce() -> None:
        print(f"memtrackfs: mounted at {mountpoint}; driver socket {options.socket_path}; daemon pid {os.getpid()}",
              flush=True)

    if foreground:
        serve(mountpoint, options, announce)
        return 0
    return _mount_in_background(mountpoint, options)


def _mount_in_background(mountpoint: str, options: MountOptions) -> int:
    log_path = log_path_for_socket(options.socket_path)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the daemon
        os.close(read_end)
        os.setsid()
        if os.fork():
            os._exit(0)
        _detach_stdio(log_path)
        try:
            serve(mountpoint, options, lambda: os.write(write_end, f"ok {os.getpid()}\n".encode()))
        except BaseException as exc:  # report to the waiting parent, whatever it was
            os.write(write_end, f"error {exc}\n".encode())
            os._exit(1)
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as pipe:
        status = pipe.readline().decode().strip()
    if status.startswith("ok "):
        print(f"memtrackfs: mounted at {mountpoint}; driver socket {options.socket_path}; daemon pid {status[3:]}")
        return 0
    detail = status[6:] if status.startswith("error ") else "the daemon exited before the mount was ready"
    # libfuse says why on the daemon's stderr (its log): bring that to the terminal.
    print(f"memtrackfs: mount failed: {_log_tail(log_path) or detail} (daemon log: {log_path})", file=sys.stderr)
    return 1


def _log_tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    return "; ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def _detach_stdio(log_path: str) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log_fd, 2)
    os.close(devnull)
    os.close(log_fd)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")


def _daemon_pid(socket_path: str) -> Optional[int]:
    from memtrackfs.client import MemtrackClient
    try:
        with MemtrackClient(socket_path) as client:
            return int(client.server["pid"])
    except OSError:
        return None


def umount(mountpoint: str, timeout: float = 10.0) -> int:
    """Unmount a memtrackfs mount and wait until its daemon has exited and removed its socket."""
    mountpoint = os.path.abspath(mountpoint)
    entry = find_mount(mountpoint)
    if not is_memtrackfs(entry):
        raise KernelError(errno.EINVAL, f"{mountpoint} is not a memtrackfs mount point")
    socket_path = entry.source[len(SOURCE_PREFIX):]
    if is_stale(mountpoint):
        _run_unmount(mountpoint, lazy=True)
        _remove(socket_path)
        print(f"memtrackfs: removed stale mount at {mountpoint}")
        return 0
    pid = _daemon_pid(socket_path)
    _run_unmount(mountpoint)
    deadline = time.monotonic() + timeout
    while pid is not None and _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _remove(socket_path)
            print(f"memtrackfs: daemon {pid} did not exit in {timeout:.0f} s: killed", file=sys.stderr)
            return 1
        time.sleep(0.02)
    print(f"memtrackfs: unmounted {mountpoint}")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours would still answer; it is gone for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
