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
import resource
import select
import signal
import stat
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from memtrackfs.errors import KernelError
from memtrackfs.model.boards import DEFAULT_BOARD
from memtrackfs.model.heaps import HeapSpec
from memtrackfs.mounts import (
    ANSWERS,
    HUNG,
    PROBE_SECONDS,
    SOURCE_PREFIX,
    STALE,
    find_mount,
    is_memtrackfs,
    listening_pid,
    log_path_for_socket,
    mounted_elsewhere,
    probe_mount,
    run_unmount,
)
from memtrackfs.processes import comm, identify, state

log = logging.getLogger("memtrackfs")


READY_SECONDS = 30.0    # from fork to the daemon's "mounted" (libfuse's init callback)


def prepare_mountpoint(mountpoint: str) -> Optional[str]:
    """Make the mount point usable; return a note if a stale mount had to be cleared."""
    entry = find_mount(mountpoint)
    state = probe_mount(mountpoint) if entry is not None else ANSWERS
    if state == STALE:
        # "Transport endpoint is not connected": its daemon died. Detach it and mount afresh.
        run_unmount(mountpoint, lazy=True)
        note = f"recovered stale mount at {mountpoint} (its daemon had died)"
    elif state == HUNG:
        raise KernelError(errno.EBUSY, f"{mountpoint} is a mount whose daemon does not answer (stopped?): "
                                       f"unmount it first (`memtrackfs umount {mountpoint}` detaches it)")
    elif is_memtrackfs(entry):
        assert entry is not None
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
    # One descriptor per connection: a soft limit of 1024 would come before the socket's caps
    # (README "Limits of the socket"); 4096 leaves room for FUSE and /proc reads beside them.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
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
    from memtrackfs.server.server import claim_socket_path

    mountpoint = os.path.abspath(mountpoint)
    # The mount point first: mounting a live mount again is refused for what it is, not for
    # the live daemon on its default socket.
    note = prepare_mountpoint(mountpoint)
    if note:
        print(f"memtrackfs: {note}", file=sys.stderr)
    claim_socket_path(options.socket_path)  # refused before anything is written beside it

    def announce() -> None:
        print(f"memtrackfs: mounted at {mountpoint}; driver socket {options.socket_path}; daemon pid {os.getpid()}",
              flush=True)

    if foreground:
        serve(mountpoint, options, announce)
        return 0
    return _mount_in_background(mountpoint, options)


def _mount_in_background(mountpoint: str, options: MountOptions) -> int:
    log_path = log_path_for_socket(options.socket_path)
    log_fd = open_log(log_path)  # refused here, before anything runs, if it is not ours
    log_start = os.fstat(log_fd).st_size  # what this daemon writes comes after
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the daemon
        os.close(read_end)
        os.setsid()
        if os.fork():
            os._exit(0)
        os.write(write_end, f"pid {os.getpid()}\n".encode())
        _detach_stdio(log_fd, f"memtrackfs: daemon pid {os.getpid()} mounting {mountpoint} "
                              f"({time.strftime('%Y-%m-%d %H:%M:%S')})")
        try:
            serve(mountpoint, options, lambda: os.write(write_end, f"ok {os.getpid()}\n".encode()))
        except BaseException as exc:  # report to the waiting parent, whatever it was
            os.write(write_end, f"error {exc}\n".encode())
            os._exit(1)
        os._exit(0)
    os.close(write_end)
    os.close(log_fd)
    os.waitpid(child, 0)
    daemon, status = _read_status(read_end, READY_SECONDS)
    if status is not None and status.startswith("ok "):
        print(f"memtrackfs: mounted at {mountpoint}; driver socket {options.socket_path}; daemon pid {status[3:]}")
        return 0
    if status is None:
        detail = f"the daemon did not report the mount ready within {READY_SECONDS:g} s"
        if daemon is not None:
            os.kill(daemon, signal.SIGKILL)
            detail += f": killed it (pid {daemon})"
    else:
        detail = status[6:] if status.startswith("error ") else "the daemon exited before the mount was ready"
        # libfuse says why on the daemon's stderr (its log): bring that to the terminal.
        detail = _log_tail(log_path, log_start) or detail
    print(f"memtrackfs: mount failed: {detail} (daemon log: {log_path})", file=sys.stderr)
    return 1


def _log_tail(path: str, start: int, lines: int = 5) -> str:
    """The last lines this daemon wrote to its log (from ``start``), but its own header."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    written = [line.strip() for line in text.strip().splitlines()[1:] if line.strip()]
    return "; ".join(written[-lines:])


def _read_status(fd: int, timeout: float) -> tuple[Optional[int], Optional[str]]:
    """The daemon's pid and its status ("ok PID" or "error ..."; "" if it exited without one, None
    if none came in ``timeout``), from the pipe it writes each of them to in one write."""
    deadline = time.monotonic() + timeout
    data = b""
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while b"\nok " not in data and b"\nerror " not in data:
            ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = pipe.read(4096)
            if not chunk:
                break  # it exited
            data += chunk
        else:
            ready = [pipe]
    first, _, rest = data.decode(errors="replace").partition("\n")
    daemon = int(first[4:]) if first.startswith("pid ") and first[4:].isdigit() else None
    return daemon, rest.strip() if ready else None


def open_log(path: str) -> int:
    """The daemon's log, opened for appending: never through a symbolic link and never a file that
    is not ours alone (another user may have put either where the log goes); nothing is truncated."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise KernelError(errno.EEXIST, f"daemon log {path} is a symbolic link: refusing to write through it "
                                        "(choose another --socket)") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_nlink != 1:
        os.close(fd)
        raise KernelError(errno.EEXIST, f"daemon log {path} exists and is not a file of ours alone: refusing to "
                                        "write to it (choose another --socket)")
    os.set_blocking(fd, True)
    return fd


def _detach_stdio(log_fd: int, header: str) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(log_fd, 2)
    os.close(devnull)
    os.close(log_fd)
    print(header, file=sys.stderr, flush=True)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")


def umount(mountpoint: str, timeout: float = 10.0) -> int:
    """Unmount a memtrackfs mount and wait until its daemon has exited and removed its socket.

    Every wait is bounded: a mount that does not answer (its daemon stopped or stuck) is
    detached lazily, and a daemon that does not exit in ``timeout`` is killed."""
    mountpoint = os.path.abspath(mountpoint)
    entry = find_mount(mountpoint)
    if not is_memtrackfs(entry):
        raise KernelError(errno.EINVAL, f"{mountpoint} is not a memtrackfs mount point")
    assert entry is not None
    socket_path = entry.source[len(SOURCE_PREFIX):]
    state = probe_mount(mountpoint)
    if state == STALE:
        run_unmount(mountpoint, lazy=True)
        _remove(socket_path)
        print(f"memtrackfs: removed stale mount at {mountpoint}")
        return 0
    pid = listening_pid(socket_path)
    if state == HUNG:
        run_unmount(mountpoint, lazy=True)
        who = f"its daemon (pid {pid}) is {_state_of(pid)}" if pid is not None else "no daemon found"
        print(f"memtrackfs: {mountpoint} did not answer within {PROBE_SECONDS:g} s ({who}): detached it "
              "(lazy unmount); the daemon exits once it runs again")
        return 0
    run_unmount(mountpoint)
    deadline = time.monotonic() + timeout
    while pid is not None and identify(pid) is not None:  # a zombie child of ours is gone too
        if time.monotonic() > deadline:
            why = _threads_waiting(pid)
            holders = mounted_elsewhere(entry.device)
            if holders:
                why += "; still mounted in the mount namespace of " + ", ".join(
                    f"pid {holder} ({comm(holder) or 'gone'})" for holder in holders[:5])
            os.kill(pid, signal.SIGKILL)
            _remove(socket_path)
            print(f"memtrackfs: daemon {pid} did not exit in {timeout:.0f} s ({why}): killed", file=sys.stderr)
            return 1
        time.sleep(0.02)
    print(f"memtrackfs: unmounted {mountpoint}")
    return 0


def _threads_waiting(pid: int) -> str:
    """Where a process's threads wait, as the kernel names it (wchan), for a message."""
    where: dict[str, int] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return "gone"
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/wchan") as f:
                name = f.read().strip()
        except OSError:
            continue
        name = "running" if name in ("", "0") else name
        where[name] = where.get(name, 0) + 1
    return "threads waiting in " + ", ".join(f"{name} x{count}" for name, count in sorted(where.items()))


def _state_of(pid: int) -> str:
    """How ps would put a process's state, for a message."""
    code = state(pid)
    if code is None:
        return "gone"
    return {"T": "stopped", "t": "stopped by a debugger", "D": "in uninterruptible sleep",
            "Z": "a zombie"}.get(code, "not answering")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
