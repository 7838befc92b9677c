"""The sysfs side of device nodes: ``sys/devices/<parent>/...``, ``sys/class/video4linux`` and
``sys/dev/char/0:0``, built on each lookup from the device table's identities.

Linux puts a class device under its parent (``/sys/devices/platform/2c000000.vpu/video4linux/
video0``, ``.../2c000000.vpu/media0``), links it from its class (``/sys/class/video4linux/video0``)
and from its number (``/sys/dev/char/81:0``). Here every node's number is 0:0 (a FUSE regular
file's st_rdev), so ``sys/dev/char/0:0`` is a directory that shows, to each process, the node
that process last looked up or opened (``DeviceTable.node_for``), as /proc/self is per process.
Lookups and listings run under ``Kernel.lock`` (the adapter takes it).
"""
from __future__ import annotations

from typing import Callable, Optional

from memtrackfs.fs.entries import Directory, Entry, GeneratedFile, Symlink
from memtrackfs.kernel import Kernel
from memtrackfs.model.devices import DeviceNode, DeviceTable
from memtrackfs.render.sysfs_device import (
    render_class_uevent,
    render_dev,
    render_index,
    render_label,
    render_parent_uevent,
)

Tgid = Callable[[], int]


def _attribute(node: DeviceNode, render: Callable[[DeviceNode], bytes]) -> GeneratedFile:
    return GeneratedFile(lambda: render(node))


def _class_device(node: DeviceNode, parent_link: str) -> Directory:
    """The attributes of a class device; ``parent_link`` leads from it to its parent."""
    assert node.identity is not None
    entries: dict[str, Entry] = {
        "dev": _attribute(node, render_dev),
        "uevent": _attribute(node, render_class_uevent),
        "device": Symlink(parent_link),
    }
    if node.identity.subsystem == "video4linux":
        entries.update(name=_attribute(node, render_label), index=_attribute(node, render_index))
    else:
        entries["model"] = _attribute(node, render_label)
    return Directory(entries, mode=0o755)


def _parent_device(devices: DeviceTable, parent: str) -> Directory:
    """/sys/devices/<parent>: its uevent, its video4linux/ directory and its media devices."""
    def children() -> list[DeviceNode]:
        return [n for n in devices.with_identity() if n.identity.parent == parent]

    def lookup(name: str) -> Optional[Entry]:
        nodes = children()
        if name == "uevent" and nodes:
            return GeneratedFile(lambda: render_parent_uevent(nodes[0].identity.driver))
        if name == "video4linux":
            videos = {n.name: n for n in nodes if n.identity.subsystem == "video4linux"}
            if videos:
                return Directory(mode=0o755, lookup=lambda child: _video(videos.get(child)),
                                 names=lambda: list(videos))
        node = next((n for n in nodes if n.name == name and n.identity.subsystem == "media"), None)
        return None if node is None else _class_device(node, f"../../{parent.rsplit('/', 1)[-1]}")

    def names() -> list[str]:
        nodes = children()
        if not nodes:
            return []
        media = [n.name for n in nodes if n.identity.subsystem == "media"]
        return ["uevent", *(["video4linux"] if len(media) < len(nodes) else []), *media]

    def _video(node: Optional[DeviceNode]) -> Optional[Entry]:
        return None if node is None else _class_device(node, f"../../../{parent.rsplit('/', 1)[-1]}")

    return Directory(mode=0o755, lookup=lookup, names=names)


def _devices_dir(devices: DeviceTable, prefix: str = "") -> Directory:
    """/sys/devices (or a directory inside it) down to the parents of the nodes."""
    def parents() -> list[str]:
        return sorted({n.identity.parent for n in devices.with_identity()})

    def lookup(name: str) -> Optional[Entry]:
        path = f"{prefix}{name}"
        if path in parents():
            return _parent_device(devices, path)
        if any(p.startswith(path + "/") for p in parents()):
            return _devices_dir(devices, path + "/")
        return None

    def names() -> list[str]:
        return sorted({p[len(prefix):].split("/")[0] for p in parents() if p.startswith(prefix)})

    return Directory(mode=0o755, lookup=lookup, names=names)


def _class_dir(devices: DeviceTable) -> Directory:
    """/sys/class/video4linux: a link per video node, into its parent."""
    def videos() -> dict[str, DeviceNode]:
        return {n.name: n for n in devices.with_identity() if n.identity.subsystem == "video4linux"}

    def lookup(name: str) -> Optional[Entry]:
        node = videos().get(name)
        return None if node is None else Symlink(f"../../devices/{node.identity.parent}/video4linux/{name}")

    return Directory({"video4linux": Directory(mode=0o755, lookup=lookup, names=lambda: list(videos()))},
                     mode=0o755)


def _dev_char_dir(devices: DeviceTable, tgid: Tgid) -> Directory:
    """/sys/dev/char with the one number every node here has; it shows the caller's node."""
    def current() -> Optional[Entry]:
        node = devices.node_for(tgid())
        if node is None:
            return None
        return _class_device(node, f"../../../devices/{node.identity.parent}")

    return Directory(mode=0o755, lookup=lambda name: current() if name == "0:0" else None,
                     names=lambda: ["0:0"] if devices.with_identity() else [])


def sysfs_entries(kernel: Kernel, tgid: Tgid) -> dict[str, Entry]:
    """The entries of MNT/sys besides kernel/: devices, class, dev."""
    devices = kernel.devices
    return {"devices": _devices_dir(devices), "class": _class_dir(devices),
            "dev": Directory({"char": _dev_char_dir(devices, tgid)}, mode=0o755)}
