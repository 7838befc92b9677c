"""Private mount namespaces through libc: unshare(2), mount(2), open_tree(2) and move_mount(2).

Python 3.11 has no os.unshare and no os.mount, so these call libc directly. Everything here acts
on the calling process, which must be single-threaded (unshare(CLONE_NEWUSER) requires it): a
freshly forked child, before it execs.
"""
from __future__ import annotations

import ctypes
import os
from typing import Optional

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_NOSUID = 0x2
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 0x80000
MNT_DETACH = 0x2
# open_tree(2) and move_mount(2) (Linux 5.2) have the same numbers on every architecture.
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT = 428, 429
OPEN_TREE_CLONE = 0x1
AT_RECURSIVE = 0x8000
AT_SYMLINK_NOFOLLOW = 0x100
_AT_FDCWD = -100
_MOVE_MOUNT_F_EMPTY_PATH = 0x4

_libc = ctypes.CDLL(None, use_errno=True)

USERNS_HELP = ("memtrackfs run needs root, or a kernel that lets unprivileged users create user "
               "namespaces (sysctl user.max_user_namespaces > 0; on Debian/Ubuntu "
               "kernel.unprivileged_userns_clone=1 and, with AppArmor, "
               "kernel.apparmor_restrict_unprivileged_userns=0)")


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _encode(text: Optional[str]) -> Optional[bytes]:
    return None if text is None else os.fsencode(text)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def enter_private_mount_namespace() -> None:
    """Move this process into a new mount namespace whose mounts no other process sees.

    As root, a mount namespace alone. Otherwise also a user namespace that maps the caller's uid
    and gid to themselves: it gives the right to mount in the new namespace until the process
    execs (the command then runs as the same unprivileged user, with no capability left).
    """
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        _check(_libc.unshare(CLONE_NEWNS), "cannot create a mount namespace (unshare)")
    else:
        if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"cannot create a user namespace ({os.strerror(code)}): {USERNS_HELP}")
        _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
        _write("/proc/self/setgroups", "deny\n")  # the kernel requires it before an unprivileged gid_map
        _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
    # Mounts start out shared with the host's where / is shared (systemd). As slaves, nothing
    # mounted here propagates out, and what the host unmounts goes here too: the namespace never
    # keeps another mount alive (where the host's mounts are private, the run's MountFollower does
    # that part).
    mount(None, "/", None, MS_REC | MS_SLAVE)


def mount(source: Optional[str], target: str, fstype: Optional[str], flags: int,
          data: Optional[str] = None) -> None:
    result = _libc.mount(_encode(source), _encode(target), _encode(fstype), ctypes.c_ulong(flags),
                         _encode(data))
    _check(result, f"mount {source or fstype or ''} on {target}")


def bind(source: str, target: str) -> None:
    """A recursive bind (with the submounts: a plain bind of a tree holding mounts that a user
    namespace locked is refused)."""
    result = _libc.mount(_encode(source), _encode(target), None, ctypes.c_ulong(MS_BIND | MS_REC), None)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"cannot bind {source} over {target}: {os.strerror(code)}")


def mount_tmpfs(target: str, mode: int, flags: int = MS_NOSUID) -> None:
    mount("memtrackfs-run", target, "tmpfs", flags, f"mode={mode:o}")


def clone_tree(path: str, flags: int = AT_RECURSIVE) -> int:
    """A detached copy of the mount at ``path`` (with its submounts unless ``flags`` says
    otherwise), as a file descriptor for ``move_mount``. With AT_SYMLINK_NOFOLLOW, a symbolic
    link is copied as itself: procfs's ``self`` then still answers each reader."""
    fd = _libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(path), OPEN_TREE_CLONE | os.O_CLOEXEC | flags)
    _check(0 if fd >= 0 else -1, f"cannot copy the mount at {path} (open_tree)")
    return fd


def move_mount(tree: int, target: str) -> None:
    """Attach the detached tree ``tree`` (from ``clone_tree``) at ``target`` and close it."""
    try:
        result = _libc.syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH)
        _check(result, f"cannot mount over {target} (move_mount)")
    finally:
        os.close(tree)


def detach(target: str) -> None:
    """umount2(MNT_DETACH): the mount at ``target`` leaves this namespace at once."""
    _check(_libc.umount2(os.fsencode(target), MNT_DETACH), f"cannot unmount {target}")

