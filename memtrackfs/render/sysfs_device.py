"""Renderers of the sysfs attributes of a device node's class device and of its parent.

- ``uevent`` of a class device: ``dev_uevent()`` (drivers/base/core.c) prints MAJOR, MINOR and
  DEVNAME for a device with a dev_t (devtmpfs adds nothing for the video4linux/media classes).
- ``dev``: ``dev_show()``, ``print_dev_t()``: "major:minor".
- ``name`` (video4linux): ``name_show()`` of drivers/media/v4l2-core/v4l2-dev.c; ``index``:
  ``index_show()``.
- ``model`` (media): ``model_show()`` of drivers/media/mc/mc-device.c.
- ``uevent`` of the parent platform device: DRIVER= of the bound driver (dev_uevent()).

Every emulated node is a regular file whose st_rdev is 0:0, so its numbers are 0:0 here too:
tools join these files to a node through stat(), and must find the same numbers.
"""
from __future__ import annotations

from memtrackfs.model.devices import DeviceNode

MAJOR, MINOR = 0, 0


def render_class_uevent(node: DeviceNode) -> bytes:
    """dev_uevent() of a class device: MAJOR, MINOR, DEVNAME."""
    return b"MAJOR=%d\nMINOR=%d\nDEVNAME=%s\n" % (MAJOR, MINOR, node.name.encode())


def render_dev(node: DeviceNode) -> bytes:
    """dev_show(): print_dev_t()."""
    return b"%d:%d\n" % (MAJOR, MINOR)


def render_label(node: DeviceNode) -> bytes:
    """name_show() (v4l2-dev.c) of a video4linux device, model_show() (mc-device.c) of a media device."""
    assert node.identity is not None
    return node.identity.label.encode() + b"\n"


def render_index(node: DeviceNode) -> bytes:
    """index_show() (v4l2-dev.c): ``"%i\\n"``."""
    assert node.identity is not None
    return b"%d\n" % node.identity.index


def render_parent_uevent(driver: str) -> bytes:
    """dev_uevent() of the parent platform device: DRIVER= of the bound driver."""
    return b"DRIVER=%s\n" % driver.encode()
