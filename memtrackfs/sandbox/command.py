"""The command of ``memtrackfs run``: started in a private namespace, waited for, and outlived by
nothing in that namespace.

A forked child enters the namespace, installs the real paths (``memtrackfs.sandbox.realpaths``) and execs
the command. It reports through a close-on-exec pipe: the identity of its mount namespace, then
either nothing (the exec closed the pipe) or why it failed. The parent waits with the signals it
watches blocked and taken one by one with sigtimedwait, so none can interrupt it half-way; it
passes them on to the command. When the command has exited, every process still in its
namespace (background children) is ended, so that the namespace, and with it every mount made
there, goes away before the run tears down the mount they point to.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Mapping, NoReturn, Optional, Sequence

from memtrackfs.sandbox import namespace, realpaths
from memtrackfs.sandbox.follow import NamespaceFollower

# Exit statuses of `memtrackfs run` itself, as env(1) and timeout(1) have them.
SETUP_FAILED = 125
NOT_EXECUTABLE = 126
NOT_FOUND = 127

WATCHED = {signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}
_FROM_TERMINAL = {signal.SIGINT, signal.SIGQUIT}
_SI_KERNEL = 0x80  # si_code of a signal the terminal sent to the whole foreground process group
STOP_GRACE = 10.0      # after a SIGTERM/SIGHUP passed on, how long the command has before SIGKILL
LEFTOVER_GRACE = 2.0   # how long processes left in the namespace have between SIGTERM and SIGKILL
_KILL_TIMEOUT = 10.0   # after SIGKILL; only a process stuck in the kernel outlasts it
FOLLOW_INTERVAL = 0.1  # how soon the namespace follows the host's unmounts and new nodes (sandbox.follow)

NamespaceId = tuple[int, int]  # (st_dev, st_ino) of /proc/PID/ns/mnt


class RunError(OSError):
    """``memtrackfs run`` could not do its part; ``status`` is the exit status to give."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message


def run_in_namespace(command: Sequence[str], env: Mapping[str, str], mountpoint: str,
                     proc_union: Optional[str]) -> int:
    """Run ``command`` to its end; its exit status, 128+N if signal N killed it. ``proc_union``:
    see ``realpaths.install``.

    Leaves WATCHED blocked in this process: the caller's teardown must not be cut short by them.
    """
    follower = NamespaceFollower(mountpoint)  # its picture of the outside, before the namespace
    report_read, report_write = os.pipe()  # close-on-exec, as every descriptor Python opens
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(report_read)
            _child(command, env, mountpoint, proc_union, report_write, mask)
        finally:
            os._exit(SETUP_FAILED)  # never return into the parent's stack
    os.close(report_write)
    with os.fdopen(report_read, "rb") as report:
        lines = report.read().decode(errors="replace").splitlines()
    ns = next((_parse_namespace(line) for line in lines if line.startswith("ns ")), None)
    failure = next((line for line in lines if not line.startswith("ns ")), None)
    if failure is not None or ns is None:
        follower.close()
        os.waitpid(pid, 0)
        kind, _, detail = (failure or "setup the child died before setting up").partition(" ")
        if kind == "exec":
            status, _, message = detail.partition(" ")
            raise RunError(int(status), message)
        raise RunError(SETUP_FAILED, f"cannot set up the namespace: {detail}")
    try:
        follower.attach(pid)
    except OSError:
        pass  # the command has already exited: there is nothing to follow
    try:
        return _wait(pid, ns, follower)
    finally:
        follower.close()
        end_namespace(ns)


def _child(command: Sequence[str], env: Mapping[str, str], mountpoint: str, proc_union: Optional[str],
           report: int, mask: set[signal.Signals]) -> NoReturn:  # pragma: no cover - runs in the child
    try:
        namespace.enter_private_mount_namespace()
        ns = os.stat("/proc/self/ns/mnt")
        os.write(report, f"ns {ns.st_dev} {ns.st_ino}\n".encode())
        realpaths.install(mountpoint, proc_union)
    except Exception as exc:
        os.write(report, f"setup {_describe(exc)}\n".encode())
        os._exit(SETUP_FAILED)
    # Python ignores SIGPIPE and SIGXFSZ (an ignored signal stays ignored across exec): the command
    # gets the defaults, as subprocess gives them. Python's handlers of the watched signals must
    # not run in this child once the mask lifts; the ones the caller ignored stay ignored.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    for sig in WATCHED:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        os.execvpe(command[0], list(command), dict(env))
    except OSError as exc:
        status = NOT_FOUND if isinstance(exc, FileNotFoundError) else NOT_EXECUTABLE
        os.write(report, f"exec {status} {command[0]}: {exc.strerror}\n".encode())
        os._exit(status)


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return str(exc)


def _parse_namespace(line: str) -> NamespaceId:
    _, dev, ino = line.split()
    return int(dev), int(ino)


def _wait(pid: int, ns: NamespaceId, follower: NamespaceFollower) -> int:
    kill_at = None
    while True:
        info = signal.sigtimedwait(WATCHED, FOLLOW_INTERVAL)
        follower.follow()
        if info is not None and info.si_signo != signal.SIGCHLD:
            # Ctrl-C and Ctrl-\ reached the command already: the terminal signals the whole
            # foreground process group. Anything else (kill, a hangup) is passed on.
            if not (info.si_signo in _FROM_TERMINAL and info.si_code == _SI_KERNEL):
                _signal(pid, info.si_signo)
            if info.si_signo in (signal.SIGTERM, signal.SIGHUP) and kill_at is None:
                kill_at = time.monotonic() + STOP_GRACE
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code
        if kill_at is not None and time.monotonic() > kill_at:
            for member in members(ns):
                _signal_member(member, ns, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # it exited meanwhile


def members(ns: NamespaceId) -> list[int]:
    """The processes in mount namespace ``ns`` (read from this process's /proc, the real one)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                info = os.stat(f"/proc/{name}/ns/mnt")
            except OSError:
                continue  # exited, a zombie (no namespaces any more), or another user's
            if (info.st_dev, info.st_ino) == ns:
                found.append(int(name))
    return found


def end_namespace(ns: NamespaceId) -> None:
    """SIGTERM every process left in the namespace, SIGKILL after LEFTOVER_GRACE; wait until none."""
    kill_at = time.monotonic() + LEFTOVER_GRACE
    give_up_at = kill_at + _KILL_TIMEOUT
    terminated: set[int] = set()
    while left := members(ns):
        now = time.monotonic()
        if now > give_up_at:
            raise RunError(SETUP_FAILED, f"processes {left} of the namespace do not die, even to SIGKILL")
        for pid in left:
            if now > kill_at:
                _signal_member(pid, ns, signal.SIGKILL)
            elif pid not in terminated:
                _signal_member(pid, ns, signal.SIGTERM)
                terminated.add(pid)
        time.sleep(0.05)


def _signal_member(pid: int, ns: NamespaceId, sig: int) -> None:
    """Signal ``pid`` only if it is still in ``ns``. The pidfd pins the process checked: while it
    lives its pid cannot be reused, and once it is gone the signal fails instead of hitting
    whichever process has the pid now."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        info = os.stat(f"/proc/{pid}/ns/mnt")
        if (info.st_dev, info.st_ino) == ns:
            signal.pidfd_send_signal(pidfd, sig)
    except (FileNotFoundError, ProcessLookupError):
        pass  # exited meanwhile
    finally:
        os.close(pidfd)
