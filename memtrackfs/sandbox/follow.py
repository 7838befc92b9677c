"""Keeping a live run's namespace in step with the outside: what the host unmounts, and the device
nodes drivers register and remove while the command runs.

``memtrackfs run``'s parent process calls ``NamespaceFollower.follow()`` every FOLLOW_INTERVAL
while the command runs; the changes are made in the namespace by a short-lived child that joins
it (setns(2) needs a process whose filesystem context no other thread shares).

Host unmounts: a new mount namespace holds a copy of every mount of the host's. Where / is
shared (systemd), the namespace's slave propagation (``namespace.enter_private_mount_namespace``)
removes a copy when the host unmounts the original. Where the host's mounts are private (most
containers, CI runners), nothing propagates: the copy stays, and a FUSE filesystem unmounted on
the host keeps its daemon alive until the run ends (``memtrackfs umount`` waits for it in vain).
So the follower watches the host's mount table (poll(2) on /proc/self/mountinfo says POLLPRI when
it changes) and detaches the copy of each mount the host has unmounted. Root only: in a user
namespace the copies are locked to their parents (mount_namespaces(7)) and cannot be unmounted
one by one; there, slave propagation alone does it, where / is shared.

Device nodes: as devtmpfs shows a node once its driver registers it, a node that appears in the
mount's dev/ is bound at /dev/NAME, and one that goes is unmounted (and its empty placeholder
removed); the nodes' sysfs identity (``device_identity``) is put in place with the first of them.
"""
from __future__ import annotations

import ctypes
import os
import select
from typing import Callable, Optional

from memtrackfs.mounts import MountEntry, parse_mountinfo
from memtrackfs.sandbox import device_identity, realpaths
from memtrackfs.sandbox.namespace import CLONE_NEWNS, CLONE_NEWUSER, MNT_DETACH, bind

_libc = ctypes.CDLL(None, use_errno=True)


def _read_mountinfo(fd: int) -> list[MountEntry]:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return parse_mountinfo(b"".join(chunks).decode(errors="surrogateescape"))


class NamespaceFollower:
    """Follows, for a run's namespace (``attach``), the host's unmounts (as root) and the device
    nodes of the memtrackfs mount at ``mountpoint``. Create it before the namespace exists (its
    pictures of the host's mounts and of the nodes are the namespace's starting point)."""

    def __init__(self, mountpoint: str) -> None:
        self._mountpoint = mountpoint
        self._nodes_dir = os.path.join(mountpoint, "dev")
        self._nodes: set[str] = set()
        self._nodes = self._list_nodes()
        self._mountinfo: Optional[int] = None
        self._known: set[MountEntry] = set()
        if os.geteuid() == 0:
            self._mountinfo = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
            self._known = set(_read_mountinfo(self._mountinfo))
            self._poll = select.poll()
            self._poll.register(self._mountinfo, select.POLLPRI)
        self._namespaces: list[tuple[int, int]] = []  # (fd, CLONE_*) to join, in order

    def attach(self, pid: int) -> None:
        """The namespace to follow: that of ``pid`` (and its user namespace, if not root)."""
        kinds = [("mnt", CLONE_NEWNS)] if os.geteuid() == 0 else [("user", CLONE_NEWUSER), ("mnt", CLONE_NEWNS)]
        for name, kind in kinds:
            self._namespaces.append((os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), kind))

    def close(self) -> None:
        if self._mountinfo is not None:
            os.close(self._mountinfo)
        for fd, _ in self._namespaces:
            os.close(fd)
        self._namespaces = []

    def follow(self) -> None:
        """Make the changes seen since the last call (it does not wait for any)."""
        if not self._namespaces:
            return
        unmounted: set[MountEntry] = set()
        if self._mountinfo is not None and self._poll.poll(0):
            now = set(_read_mountinfo(self._mountinfo))
            unmounted, self._known = self._known - now, now
        nodes = self._list_nodes()
        added, removed = sorted(nodes - self._nodes), sorted(self._nodes - nodes)
        self._nodes = nodes
        if unmounted or added or removed:
            self._in_namespace(lambda: _apply(unmounted, self._mountpoint, added, removed))

    def _list_nodes(self) -> set[str]:
        try:
            return set(os.listdir(self._nodes_dir))
        except OSError:
            return self._nodes  # the mount is going: nothing changes any more

    def _in_namespace(self, action: Callable[[], None]) -> None:
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            status = 1
            try:
                if all(_libc.setns(fd, kind) == 0 for fd, kind in self._namespaces):
                    action()
                    status = 0
            finally:
                os._exit(status)
        os.waitpid(child, 0)


def _apply(unmounted: set[MountEntry], mountpoint: str, added: list[str], removed: list[str]) -> None:
    """In the namespace: detach the copies of the host's unmounted mounts; bind the new nodes,
    unmount the removed ones; put the nodes' sysfs identity in place if the first nodes with one
    came after the start."""
    nodes_dir = os.path.join(mountpoint, "dev")
    with open("/proc/self/mountinfo", errors="surrogateescape") as f:
        here = parse_mountinfo(f.read())
    # Deepest first: a submount goes before the mount it sits on.
    for mount in sorted(set(here) & unmounted, key=lambda m: -m.mountpoint.count("/")):
        _libc.umount2(os.fsencode(mount.mountpoint), MNT_DETACH)
    ours = os.stat(nodes_dir).st_dev
    if added and not device_identity.installed():
        # sysfs before /dev, as the kernel publishes a device before udev makes its node.
        device_identity.install(mountpoint, realpaths.shadow)
    for name in removed:
        target = f"/dev/{name}"
        if any(m.mountpoint == target and _device(m) == ours for m in here):
            _libc.umount2(os.fsencode(target), MNT_DETACH)
            if not os.path.ismount(target):
                os.unlink(target)  # our placeholder; a host node under it shows again
    for name in added:
        target = f"/dev/{name}"
        try:
            if os.path.lexists(target) and os.stat(target).st_dev == ours:
                continue  # the namespace's setup bound it already
            if not os.path.lexists(target):
                open(target, "x").close()
            bind(f"{nodes_dir}/{name}", target)
        except OSError:
            pass  # removed again meanwhile: the next call sees it gone


def _device(mount: MountEntry) -> int:
    major, minor = mount.device.split(":")
    return os.makedev(int(major), int(minor))
