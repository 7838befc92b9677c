"""Device nodes served by drivers: the emulated kernel's table of ``dev/<name>`` files.

A driver (e.g. vpu_sim, over the socket) registers names; each open, ioctl and release of such a
file is forwarded to it through the ``Driver`` interface, with the caller's tgid and pid as the
kernel's ``current`` would have them. The table is guarded by ``Kernel.lock``; forwarding itself
happens outside the lock (it waits for another process).

A node may have an ``Identity``: the class device the kernel would publish in sysfs
(``video4linux`` or ``media``), which tools find through ``/sys/dev/char/<major>:<minor>``.
Every node here is a regular file whose st_rdev is 0:0, so that one entry has to stand for each
of them in turn: the table remembers, per process, the node it last looked up or opened
(``note_use``), and ``/sys/dev/char/0:0`` shows that node to that process (``node_for``).
"""
from __future__ import annotations

import errno
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from memtrackfs.errors import KernelError
from memtrackfs.model.buffer_memory import BufferMemory

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
RESERVED = {"kmsg"}
# Class devices a node may be, and the device-name prefix each needs (DEVNAME, as tools parse it).
SUBSYSTEMS = {"video4linux": "video", "media": "media"}
_PARENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}){0,7}")
_USERS_KEPT = 4096  # processes whose last node is remembered


@dataclass(frozen=True)
class Identity:
    """The class device of a node, as sysfs publishes it."""
    subsystem: str      # "video4linux" or "media"
    label: str          # video4linux ``name`` (vdev->name) or media ``model``
    parent: str         # the parent device under /sys/devices, e.g. "platform/2c000000.vpu"
    driver: str         # the parent's driver (its uevent's DRIVER=)
    index: int = 0      # video4linux ``index``: its place among its parent's video nodes


def check_identity(name: str, subsystem: str, label: str, parent: str, driver: str) -> None:
    prefix = SUBSYSTEMS.get(subsystem)
    if prefix is None:
        raise KernelError(errno.EINVAL, f"subsystem must be one of {', '.join(SUBSYSTEMS)}, not {subsystem!r}")
    if not re.fullmatch(re.escape(prefix) + r"[0-9]+", name):
        raise KernelError(errno.EINVAL, f"a {subsystem} node is named {prefix}N, not {name!r}")
    if not _PARENT.fullmatch(parent) or any(part in (".", "..") for part in parent.split("/")):
        raise KernelError(errno.EINVAL, f"parent must be a device path under /sys/devices, not {parent!r}")
    for key, value in (("label", label), ("driver", driver)):
        if not 0 < len(value) <= 64 or not value.isprintable():
            raise KernelError(errno.EINVAL, f"{key} must be 1 to 64 printable characters")


class Driver(Protocol):
    """Who answers a device node's file operations."""

    name: str

    def call(self, event: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one file operation; return the driver's completion. KernelError on failure."""
        ...


class DeviceNode:
    __slots__ = ("name", "driver", "alive", "memory", "identity")

    def __init__(self, name: str, driver: Driver, identity: Optional[Identity] = None) -> None:
        self.name = name
        self.driver = driver
        self.alive = True
        self.memory = BufferMemory()  # what its mmap()ed buffers hold (its own lock)
        self.identity = identity


class DeviceTable:
    def __init__(self) -> None:
        self.nodes: dict[str, DeviceNode] = {}
        self._last_used: OrderedDict[int, str] = OrderedDict()  # tgid -> node name

    def register(self, name: str, driver: Driver, sysfs: Optional[dict[str, str]] = None) -> DeviceNode:
        """A new node; ``sysfs``: subsystem, label, parent and driver of its class device."""
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in RESERVED:
            raise KernelError(errno.EINVAL, f"device name {name!r} must match {_NAME.pattern} and not be kmsg")
        if name in self.nodes:
            raise KernelError(errno.EEXIST, f"dev/{name} is already registered by {self.nodes[name].driver.name!r}")
        identity = None
        if sysfs is not None:
            check_identity(name, **sysfs)
            # get_index() of v4l2-dev.c: the lowest index no live sibling uses.
            used = {n.identity.index for n in self.with_identity() if n.identity.parent == sysfs["parent"]
                    and n.identity.subsystem == sysfs["subsystem"]}
            identity = Identity(**sysfs, index=min(set(range(len(used) + 1)) - used))
        node = self.nodes[name] = DeviceNode(name, driver, identity)
        return node

    def unregister(self, node: DeviceNode) -> None:
        node.alive = False
        if self.nodes.get(node.name) is node:
            del self.nodes[node.name]

    def with_identity(self) -> list[DeviceNode]:
        return [node for node in self.nodes.values() if node.identity is not None]

    def note_use(self, tgid: int, name: str) -> None:
        """Process ``tgid`` looked up or opened dev/``name``."""
        self._last_used[tgid] = name
        self._last_used.move_to_end(tgid)
        if len(self._last_used) > _USERS_KEPT:
            self._last_used.popitem(last=False)

    def node_for(self, tgid: int) -> Optional[DeviceNode]:
        """The node /sys/dev/char/0:0 stands for in process ``tgid``: the one it used last, else
        the first with an identity."""
        node = self.nodes.get(self._last_used.get(tgid, ""))
        if node is not None and node.identity is not None:
            return node
        identified = self.with_identity()
        return identified[0] if identified else None
