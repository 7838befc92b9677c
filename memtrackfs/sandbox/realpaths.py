"""The emulation at the real paths: the mounts ``memtrackfs run`` makes in its private namespace.

| real path             | bound from (MNT: the run's memtrackfs mount)                            |
|-----------------------|--------------------------------------------------------------------------|
| /sys/kernel/debug     | MNT/sys/kernel/debug, the whole directory (the host's debugfs is hidden) |
| /sys/kernel/dmabuf    | MNT/sys/kernel/dmabuf (and each other MNT/sys/kernel/NAME the board has, |
|                       | e.g. rk_dma_heap)                                                         |
| /dev/kmsg, /dev/NODE  | MNT/dev/kmsg and each device node registered when the command starts     |
| /proc                 | MNT/proc, the union, whose links lead into REAL_PROC: the real procfs    |

A target the host lacks (no /dev/video0 on a PC, no /sys/kernel/dmabuf without
CONFIG_DMABUF_SYSFS_STATS) cannot be created in devtmpfs or sysfs without changing the host's
files, so its directory is first *shadowed*: covered with a tmpfs that holds a bind mount of each
original entry (symlinks copied), where the new entry can be made. Entries the host adds to a
shadowed directory afterwards do not show inside.
"""
from __future__ import annotations

import os
import stat

from memtrackfs.sandbox import device_identity
from memtrackfs.sandbox.namespace import bind, mount_tmpfs


def install(mountpoint: str, real_proc: str) -> None:
    """Mount everything; the caller must be alone in a private mount namespace."""
    plan = [(f"{mountpoint}/sys/kernel/{name}", f"/sys/kernel/{name}")
            for name in sorted(os.listdir(f"{mountpoint}/sys/kernel"))]
    plan += [(f"{mountpoint}/dev/{name}", f"/dev/{name}") for name in sorted(os.listdir(f"{mountpoint}/dev"))]
    for directory in sorted({os.path.dirname(target) for _, target in plan if not os.path.lexists(target)}):
        shadow(directory)
    for source, target in plan:
        if not os.path.lexists(target):
            _create_like(source, target)
        bind(source, target)
    device_identity.install(mountpoint, shadow)
    # /proc last: shadow() reaches the covered directories through the real /proc/self/fd.
    bind("/proc", real_proc)
    bind(f"{mountpoint}/proc", "/proc")


def shadow(directory: str) -> None:
    """Cover ``directory`` with a tmpfs holding the same entries, so that entries can be added."""
    try:
        original = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot shadow {directory} to add entries to it: {exc.strerror}") from None
    try:
        names = os.listdir(original)
        mount_tmpfs(directory, stat.S_IMODE(os.fstat(original).st_mode))
        # The covered directory stays reachable through the descriptor opened before the tmpfs.
        for name in names:
            _recreate(f"/proc/self/fd/{original}/{name}", os.path.join(directory, name))
    finally:
        os.close(original)


def _recreate(source: str, target: str) -> None:
    try:
        mode = os.lstat(source).st_mode
    except FileNotFoundError:
        return  # removed on the host since the listing
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(source), target)
        return
    _create_like(source, target)
    bind(source, target)


def _create_like(source: str, target: str) -> None:
    """An empty directory or file for a bind mount of ``source`` to cover (the kinds must match)."""
    if os.path.isdir(source):
        os.mkdir(target)
    else:
        open(target, "x").close()
