"""The emulation at the real paths: the mounts ``memtrackfs run`` makes in its private namespace.

| real path           | what the namespace has there (MNT: the run's memtrackfs mount)                       |
|---------------------|---------------------------------------------------------------------------------------|
| /sys/kernel/NAME    | MNT/sys/kernel/NAME, for each NAME the board has (debug: the host's debugfs is hidden) |
| /dev                | a tmpfs holding the host's /dev entry by entry (``devices``), and MNT/dev/kmsg and     |
|                     | each device node registered when the command starts                                  |
| /sys/devices/..., /sys/class/video4linux, /sys/dev/char/0:0 | the device nodes' identity (``device_identity``) |
| /proc               | the real procfs if the board adds nothing to it; else the proc union (``proc_union``), |
|                     | completed by ``_install_proc``                                                       |

GRAFTS lists the directories of the mount whose entries are put at the same path below /; another
part of the emulation that needs more real paths adds its directory there, or, for paths of
its own shape, a step in ``install`` (as ``device_identity``).

A target the host lacks (no /dev/video0 on a PC, no /sys/kernel/dmabuf without
CONFIG_DMABUF_SYSFS_STATS) cannot be created in devtmpfs or sysfs without changing the host's
files, so its directory is first *shadowed*: covered with a tmpfs that holds a bind mount of each
original entry (symlinks copied), where the new entry can be made. Entries the host adds to a
shadowed directory afterwards do not show inside.
"""
from __future__ import annotations

import os
import stat
from typing import Iterable, Optional

from memtrackfs.sandbox import device_identity
from memtrackfs.sandbox.namespace import (
    AT_SYMLINK_NOFOLLOW,
    bind,
    clone_tree,
    mount_tmpfs,
    move_mount,
)
from memtrackfs.sandbox.proc_union import REAL

# Directories of the mount whose every entry is put at /<directory>/<entry>.
GRAFTS: tuple[str, ...] = ("sys/kernel",)
_MOUNT_FLAGS_KEPT = os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC  # statvfs's ST_* are mount(2)'s MS_*
_PTMX = os.makedev(5, 2)  # /dev/ptmx: TTYAUX_MAJOR, 2


def install(mountpoint: str, proc_union: Optional[str]) -> None:
    """Mount everything; the caller must be alone in a private mount namespace.

    ``proc_union``: where the proc union is mounted, None when the board adds nothing to /proc.
    """
    real_proc = clone_tree("/proc")  # before anything covers it: shadow() reads /proc/self/fd
    try:
        for directory in GRAFTS:
            graft(f"{mountpoint}/{directory}", f"/{directory}")
        install_dev(f"{mountpoint}/dev")
        device_identity.install(mountpoint, shadow)
    except BaseException:
        os.close(real_proc)
        raise
    if proc_union is None:
        os.close(real_proc)
    else:
        _install_proc(proc_union, real_proc, f"{mountpoint}/proc")


def graft(source_dir: str, target_dir: str, names: Optional[Iterable[str]] = None) -> None:
    """Put each entry of ``source_dir`` (or only ``names``) at the same name in ``target_dir``,
    shadowing ``target_dir`` first if an entry has no place there yet."""
    names = sorted(os.listdir(source_dir) if names is None else names)
    if any(not os.path.lexists(os.path.join(target_dir, name)) for name in names):
        shadow(target_dir)
    _bind_entries(source_dir, target_dir, names)


def _bind_entries(source_dir: str, target_dir: str, names: Iterable[str]) -> None:
    """Bind each named entry of ``source_dir`` over its place in ``target_dir`` (made if missing:
    ``target_dir`` must be writable, e.g. shadowed already)."""
    for name in names:
        source, target = os.path.join(source_dir, name), os.path.join(target_dir, name)
        if not os.path.lexists(target):
            _create_like(source, target)
        bind(source, target)


def install_dev(nodes_dir: str) -> None:
    """/dev as devtmpfs has it: every host entry (pseudo-terminals working: ``_add_ptmx``), over
    them the emulated kmsg, and the emulated device nodes. Always shadowed, so that nothing the
    run does reaches the host's /dev."""
    host_dev = clone_tree("/dev")  # with /dev/pts, before the tmpfs covers it
    try:
        shadow("/dev", skip={"ptmx"})
    except BaseException:
        os.close(host_dev)
        raise
    _add_ptmx(host_dev)
    # Into the shadow just made: shadowing /dev again for nodes the host lacks (video0, ...)
    # would leave ptmx a bind of the lone file, which finds no pts beside it (_add_ptmx).
    _bind_entries(nodes_dir, "/dev", sorted(os.listdir(nodes_dir)))


def _add_ptmx(host_dev: int) -> None:
    """/dev/ptmx must find ``pts`` beside it in the same mount (ptmx_open -> devpts_acquire ->
    path_pts), so a bind of the lone file does not work. As root: the node itself, in the tmpfs,
    beside the bind of /dev/pts. In a user namespace mknod is refused, so the host's /dev
    (``host_dev``, a detached copy) goes whole to /dev/.host and ptmx is a link into it
    (ptsname() still says /dev/pts/N: the same devpts)."""
    try:
        os.mknod("/dev/ptmx", stat.S_IFCHR | 0o666, _PTMX)
    except PermissionError:
        os.mkdir("/dev/.host", 0o755)
        move_mount(host_dev, "/dev/.host")
        os.symlink(".host/ptmx", "/dev/ptmx")
        return
    os.close(host_dev)
    os.chmod("/dev/ptmx", 0o666)  # whatever the umask


def _install_proc(union: str, real_proc: int, own_dir: str) -> None:
    """/proc: the union, procfs under it at /proc/.real, and over its placeholders procfs's own
    ``self`` and ``thread-self`` links, procfs's other entries, and the board's (``proc_union``)."""
    bind(union, "/proc")
    move_mount(real_proc, f"/proc/{REAL}")
    for link in ("self", "thread-self"):
        move_mount(clone_tree(f"/proc/{REAL}/{link}", AT_SYMLINK_NOFOLLOW), f"/proc/{link}")
    own = set(os.listdir(own_dir))
    for name in os.listdir("/proc"):
        if name in own:
            bind(f"{own_dir}/{name}", f"/proc/{name}")
        elif not name.isdigit() and not os.path.islink(f"/proc/{name}"):
            bind(f"/proc/{REAL}/{name}", f"/proc/{name}")


def shadow(directory: str, skip: Iterable[str] = ()) -> None:
    """Cover ``directory`` with a tmpfs holding the same entries (but ``skip``), so that entries
    can be added."""
    try:
        original = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot shadow {directory} to add entries to it: {exc.strerror}") from None
    try:
        names = os.listdir(original)
        flags = os.fstatvfs(original).f_flag & _MOUNT_FLAGS_KEPT
        mount_tmpfs(directory, stat.S_IMODE(os.fstat(original).st_mode), flags)
        # The covered directory stays reachable through the descriptor opened before the tmpfs.
        covered = f"/proc/self/fd/{original}"
        for name in names:
            if name not in skip:
                _recreate(f"{covered}/{name}", os.path.join(directory, name))
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
