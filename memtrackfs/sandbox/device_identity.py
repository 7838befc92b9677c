"""The device nodes' sysfs identity at its real paths, inside ``memtrackfs run``'s namespace.

Tools find what a device node is through sysfs: v4l-utils stat() the node and read
``/sys/dev/char/<major>:<minor>/uevent`` (DEVNAME says video or media), then look for a media
device beside it in ``.../device/``; ``v4l2-ctl --list-devices`` and GStreamer look under
``/sys/class/video4linux``. The mount serves those entries (``memtrackfs.fs.sysfs_tree``); this
puts them where the tools look:

| real path                                    | bound from                                  |
|----------------------------------------------|---------------------------------------------|
| /sys/devices/<parent> (e.g. platform/2c000000.vpu) | MNT/sys/devices/<parent>: video4linux/, media0/ |
| /sys/class/video4linux                       | MNT/sys/class/video4linux                   |
| /sys/dev/char/0:0                            | MNT/sys/dev/char/0:0 (per process: README)   |

Where the host lacks the directory to put them in, the directory above is shadowed
(``realpaths.shadow``): covered by a tmpfs that keeps every host entry. The host's own
``/sys/class/video4linux`` (a laptop's webcam) is hidden, as its /dev/video* are.
"""
from __future__ import annotations

import os

from memtrackfs.sandbox.namespace import bind


def installed() -> bool:
    """Whether the identity is in place (no host has a character device 0:0 of its own)."""
    return os.path.lexists("/sys/dev/char/0:0")


def install(mountpoint: str, shadow) -> None:
    """Bind the identity entries; ``shadow(directory)`` makes a host directory extensible."""
    sysfs = f"{mountpoint}/sys"
    if not os.path.isdir(f"{sysfs}/dev/char") or not os.listdir(f"{sysfs}/dev/char"):
        return  # no node has an identity (a run without the VPU)
    for parent in _parents(f"{sysfs}/devices"):
        _bind_adding(f"{sysfs}/devices/{parent}", f"/sys/devices/{parent}", shadow)
    if os.listdir(f"{sysfs}/class/video4linux"):
        _bind_adding(f"{sysfs}/class/video4linux", "/sys/class/video4linux", shadow)
    _bind_adding(f"{sysfs}/dev/char/0:0", "/sys/dev/char/0:0", shadow)


def _parents(devices: str, prefix: str = "") -> list[str]:
    """The parent devices under MNT/sys/devices: the directories that hold a uevent."""
    found = []
    for name in sorted(os.listdir(f"{devices}/{prefix}")):
        path = f"{prefix}{name}"
        if os.path.exists(f"{devices}/{path}/uevent"):
            found.append(path)
        elif os.path.isdir(f"{devices}/{path}"):
            found += _parents(devices, path + "/")
    return found


def _bind_adding(source: str, target: str, shadow) -> None:
    """Bind the directory ``source`` at ``target``, making ``target`` (and its parents) first."""
    if not os.path.lexists(target):
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            _make_directory(parent, shadow)
        shadow(parent)
        os.mkdir(target)
    bind(source, target)


def _make_directory(path: str, shadow) -> None:
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        _make_directory(parent, shadow)
    shadow(parent)
    os.mkdir(path)
