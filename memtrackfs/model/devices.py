"""Device nodes served by drivers: the emulated kernel's table of ``dev/<name>`` files.

A driver (e.g. vpu_sim, over the socket) registers names; each open, ioctl and release of such a
file is forwarded to it through the ``Driver`` interface, with the caller's tgid and pid as the
kernel's ``current`` would have them. The table is guarded by ``Kernel.lock``; forwarding itself
happens outside the lock (it waits for another process).
"""
from __future__ import annotations

import errno
import re
from typing import Any, Protocol

from memtrackfs.errors import KernelError

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
RESERVED = {"kmsg"}


class Driver(Protocol):
    """Who answers a device node's file operations."""

    name: str

    def call(self, event: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one file operation; return the driver's completion. KernelError on failure."""
        ...


class DeviceNode:
    __slots__ = ("name", "driver", "alive")

    def __init__(self, name: str, driver: Driver) -> None:
        self.name = name
        self.driver = driver
        self.alive = True


class DeviceTable:
    def __init__(self) -> None:
        self.nodes: dict[str, DeviceNode] = {}

    def register(self, name: str, driver: Driver) -> DeviceNode:
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in RESERVED:
            raise KernelError(errno.EINVAL, f"device name {name!r} must match {_NAME.pattern} and not be kmsg")
        if name in self.nodes:
            raise KernelError(errno.EEXIST, f"dev/{name} is already registered by {self.nodes[name].driver.name!r}")
        node = self.nodes[name] = DeviceNode(name, driver)
        return node

    def unregister(self, node: DeviceNode) -> None:
        node.alive = False
        if self.nodes.get(node.name) is node:
            del self.nodes[node.name]
