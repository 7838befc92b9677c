"""The slice of ``linux/media.h`` (the media controller API) the simulated VPU's media device speaks.

64-bit layouts; ``tests/test_vpu_uapi.py`` compares them with the real header through gcc.
"""
from __future__ import annotations

import ctypes
from ctypes import c_char, c_uint8, c_uint16, c_uint32, c_uint64

MEDIA_ENT_F_IO_V4L = 0x00010001
MEDIA_ENT_F_PROC_VIDEO_ENCODER = 0x4007
MEDIA_ENT_F_PROC_VIDEO_DECODER = 0x4008
MEDIA_ENT_ID_FLAG_NEXT = 1 << 31
MEDIA_PAD_FL_SINK = 1 << 0
MEDIA_PAD_FL_SOURCE = 1 << 1
MEDIA_LNK_FL_ENABLED = 1 << 0
MEDIA_LNK_FL_IMMUTABLE = 1 << 1
MEDIA_LNK_FL_DATA_LINK = 0 << 28
MEDIA_LNK_FL_INTERFACE_LINK = 1 << 28
MEDIA_INTF_T_V4L_VIDEO = 0x00000200

# media_gobj_gen_id(): the object type in the id's top byte.
MEDIA_GRAPH_ENTITY, MEDIA_GRAPH_PAD, MEDIA_GRAPH_LINK, MEDIA_GRAPH_INTF_DEVNODE = 0, 1, 2, 3


class media_device_info(ctypes.Structure):
    _fields_ = [("driver", c_char * 16), ("model", c_char * 32), ("serial", c_char * 40),
                ("bus_info", c_char * 32), ("media_version", c_uint32), ("hw_revision", c_uint32),
                ("driver_version", c_uint32), ("reserved", c_uint32 * 31)]


class _media_entity_dev(ctypes.Structure):
    _fields_ = [("major", c_uint32), ("minor", c_uint32)]


class _media_entity_desc_u(ctypes.Union):
    _fields_ = [("dev", _media_entity_dev), ("raw", c_uint8 * 184)]


class media_entity_desc(ctypes.Structure):
    _anonymous_ = ("u",)
    _fields_ = [("id", c_uint32), ("name", c_char * 32), ("type", c_uint32), ("revision", c_uint32),
                ("flags", c_uint32), ("group_id", c_uint32), ("pads", c_uint16), ("links", c_uint16),
                ("reserved", c_uint32 * 4), ("u", _media_entity_desc_u)]


class media_pad_desc(ctypes.Structure):
    _fields_ = [("entity", c_uint32), ("index", c_uint16), ("flags", c_uint32), ("reserved", c_uint32 * 2)]


class media_link_desc(ctypes.Structure):
    _fields_ = [("source", media_pad_desc), ("sink", media_pad_desc), ("flags", c_uint32),
                ("reserved", c_uint32 * 2)]


class media_links_enum(ctypes.Structure):
    # ``pads`` and ``links`` are user-space addresses (copy_to_user).
    _fields_ = [("entity", c_uint32), ("pads", c_uint64), ("links", c_uint64), ("reserved", c_uint32 * 4)]


class media_v2_entity(ctypes.Structure):
    _fields_ = [("id", c_uint32), ("name", c_char * 64), ("function", c_uint32), ("flags", c_uint32),
                ("reserved", c_uint32 * 5)]


class media_v2_intf_devnode(ctypes.Structure):
    _fields_ = [("major", c_uint32), ("minor", c_uint32)]


class _media_v2_interface_u(ctypes.Union):
    _fields_ = [("devnode", media_v2_intf_devnode), ("raw", c_uint32 * 16)]


class media_v2_interface(ctypes.Structure):
    _pack_ = 1
    _anonymous_ = ("u",)
    _fields_ = [("id", c_uint32), ("intf_type", c_uint32), ("flags", c_uint32), ("reserved", c_uint32 * 9),
                ("u", _media_v2_interface_u)]


class media_v2_pad(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("id", c_uint32), ("entity_id", c_uint32), ("flags", c_uint32), ("index", c_uint32),
                ("reserved", c_uint32 * 4)]


class media_v2_link(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("id", c_uint32), ("source_id", c_uint32), ("sink_id", c_uint32), ("flags", c_uint32),
                ("reserved", c_uint32 * 6)]


class media_v2_topology(ctypes.Structure):
    _fields_ = [("topology_version", c_uint64), ("num_entities", c_uint32), ("reserved1", c_uint32),
                ("ptr_entities", c_uint64), ("num_interfaces", c_uint32), ("reserved2", c_uint32),
                ("ptr_interfaces", c_uint64), ("num_pads", c_uint32), ("reserved3", c_uint32),
                ("ptr_pads", c_uint64), ("num_links", c_uint32), ("reserved4", c_uint32),
                ("ptr_links", c_uint64)]


def _iowr(nr: int, struct: type) -> int:
    return (3 << 30) | (ctypes.sizeof(struct) << 16) | (ord("|") << 8) | nr


MEDIA_IOC_DEVICE_INFO = _iowr(0x00, media_device_info)
MEDIA_IOC_ENUM_ENTITIES = _iowr(0x01, media_entity_desc)
MEDIA_IOC_ENUM_LINKS = _iowr(0x02, media_links_enum)
MEDIA_IOC_SETUP_LINK = _iowr(0x03, media_link_desc)
MEDIA_IOC_G_TOPOLOGY = _iowr(0x04, media_v2_topology)
