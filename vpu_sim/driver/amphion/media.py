"""The VPU's media controller device (``/dev/media0``): its topology and its ioctls.

``vpu_init_media_device()`` (drivers/media/platform/amphion/vpu_drv.c) registers one media
device, model "amphion-vpu", bus "platform: amphion-vpu"; each video node then registers the
mem2mem topology of ``v4l2_m2m_register_media_controller()`` (v4l2-mem2mem.c): a source entity
(I/O, the OUTPUT queue) linked to a processing entity (the decoder or encoder function) linked to
a sink entity (I/O, the CAPTURE queue), and a video interface linked to the source and the sink.
Object ids follow ``media_gobj_create()``: one counter for every object, the object type in the
top byte. G_TOPOLOGY, ENUM_ENTITIES and ENUM_LINKS answer as ``mc-device.c`` does.

Every node here has the number 0:0 (a FUSE regular file's st_rdev), so the interfaces say 0:0 and
tools find theirs by that number: the interface of the node the calling process opened last is
listed first (as /sys/dev/char/0:0 shows that node to it: README).
"""
from __future__ import annotations

import ctypes
import errno
import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

from memtrackfs.errors import KernelError
from vpu_sim import media_uapi as mu
from vpu_sim.driver.amphion import model as amphion
from vpu_sim.driver.amphion.ioctl_formats import kernel_version
from vpu_sim.driver.amphion.ioctls import UserMemory, load
from vpu_sim.driver.memtrack import Caller

_IMMUTABLE = mu.MEDIA_LNK_FL_ENABLED | mu.MEDIA_LNK_FL_IMMUTABLE


@dataclass(frozen=True)
class Entity:
    id: int
    name: str
    function: int
    pads: tuple["Pad", ...]


@dataclass(frozen=True)
class Pad:
    id: int
    entity: int
    index: int
    flags: int


@dataclass(frozen=True)
class Link:
    id: int
    source: int        # a pad id (data link) or an interface id (interface link)
    sink: int          # a pad id or an entity id
    flags: int
    source_entity: int = 0  # data links: the entity of the source pad


@dataclass(frozen=True)
class Interface:
    id: int
    node: str          # dev/<node> it stands for


@dataclass(frozen=True)
class VideoFunction:
    node: str          # "video0"
    vdev_name: str     # "amphion-vpu-decoder"
    function: int      # MEDIA_ENT_F_PROC_VIDEO_DECODER / _ENCODER


class Topology:
    """The graph the video nodes registered, in registration order."""

    def __init__(self, functions: Sequence[VideoFunction]) -> None:
        ids = itertools.count(1)

        def new(kind: int) -> int:
            return (kind << 24) | next(ids)

        self.entities: list[Entity] = []
        self.interfaces: list[Interface] = []
        self.links: list[Link] = []
        for video in functions:
            made = []
            for suffix, function, pad_flags in (("source", mu.MEDIA_ENT_F_IO_V4L, (mu.MEDIA_PAD_FL_SOURCE,)),
                                                ("proc", video.function, (mu.MEDIA_PAD_FL_SINK, mu.MEDIA_PAD_FL_SOURCE)),
                                                ("sink", mu.MEDIA_ENT_F_IO_V4L, (mu.MEDIA_PAD_FL_SINK,))):
                entity_id = new(mu.MEDIA_GRAPH_ENTITY)
                pads = tuple(Pad(new(mu.MEDIA_GRAPH_PAD), entity_id, index, flags)
                             for index, flags in enumerate(pad_flags))
                made.append(Entity(entity_id, f"{video.vdev_name}-{suffix}", function, pads))
            source, proc, sink = made
            self.entities += made
            for src, dst in ((source, proc.pads[0]), (proc, sink.pads[0])):
                self.links.append(Link(new(mu.MEDIA_GRAPH_LINK), src.pads[-1].id, dst.id, _IMMUTABLE, src.id))
                new(mu.MEDIA_GRAPH_LINK)  # its backlink: an object too, never reported
            interface = Interface(new(mu.MEDIA_GRAPH_INTF_DEVNODE), video.node)
            self.interfaces.append(interface)
            for entity in (source, sink):
                self.links.append(Link(new(mu.MEDIA_GRAPH_LINK), interface.id, entity.id,
                                       _IMMUTABLE | mu.MEDIA_LNK_FL_INTERFACE_LINK))
        self.version = next(ids) - 1  # topology_graph_version: one step per object created

    def pads(self) -> list[Pad]:
        return [pad for entity in self.entities for pad in entity.pads]

    def entity(self, entity_id: int) -> Entity:
        for entity in self.entities:
            if entity.id == entity_id:
                return entity
        raise KernelError(errno.EINVAL, f"no entity {entity_id}")

    def data_links_from(self, entity: Entity) -> list[Link]:
        return [link for link in self.links if link.source_entity == entity.id]


def _copy_array(user: UserMemory, address: int, items: list[ctypes.Structure]) -> None:
    if address and items:
        user.write(address, b"".join(bytes(item) for item in items))


class MediaFile:
    """One open() of /dev/media0; ``last_node`` names the video node the caller used last."""

    def __init__(self, topology: Topology, last_node: Callable[[int], str]) -> None:
        self.topology = topology
        self._last_node = last_node
        self._handlers: dict[int, Callable[[bytes, UserMemory, Caller], bytes]] = {
            mu.MEDIA_IOC_DEVICE_INFO: self._device_info,
            mu.MEDIA_IOC_ENUM_ENTITIES: self._enum_entities,
            mu.MEDIA_IOC_ENUM_LINKS: self._enum_links,
            mu.MEDIA_IOC_SETUP_LINK: self._setup_link,
            mu.MEDIA_IOC_G_TOPOLOGY: self._g_topology,
        }

    def ioctl(self, cmd: int, arg: bytes, user: UserMemory, caller: Caller) -> tuple[int, bytes]:
        handler = self._handlers.get(cmd)
        if handler is None:
            return errno.ENOTTY, b""  # MEDIA_IOC_REQUEST_ALLOC too: this device has no requests
        try:
            return 0, handler(arg, user, caller)
        except OSError as exc:
            return exc.errno or errno.EIO, b""

    def _device_info(self, arg: bytes, user: UserMemory, caller: Caller) -> bytes:
        version = kernel_version()
        return bytes(mu.media_device_info(driver=amphion.DRIVER_NAME.encode(), model=amphion.MEDIA_MODEL.encode(),
                                          bus_info=amphion.BUS_INFO.encode(), media_version=version,
                                          driver_version=version))

    def _entity_desc(self, entity: Entity) -> mu.media_entity_desc:
        desc = mu.media_entity_desc(id=entity.id, name=entity.name.encode()[:31], type=entity.function,
                                    pads=len(entity.pads), links=len(self.topology.data_links_from(entity)))
        return desc  # dev.major/minor: 0:0, as every node's number here

    def _enum_entities(self, arg: bytes, user: UserMemory, caller: Caller) -> bytes:
        wanted = load(mu.media_entity_desc, arg).id
        entities = self.topology.entities
        if wanted & mu.MEDIA_ENT_ID_FLAG_NEXT:
            after = wanted & ~mu.MEDIA_ENT_ID_FLAG_NEXT
            following = [e for e in entities if e.id > after]
            if not following:
                raise KernelError(errno.EINVAL, f"no entity after {after}")
            return bytes(self._entity_desc(following[0]))
        return bytes(self._entity_desc(self.topology.entity(wanted)))

    def _enum_links(self, arg: bytes, user: UserMemory, caller: Caller) -> bytes:
        request = load(mu.media_links_enum, arg)
        entity = self.topology.entity(request.entity)
        _copy_array(user, request.pads, [mu.media_pad_desc(entity=pad.entity, index=pad.index, flags=pad.flags)
                                         for pad in entity.pads])
        pads = {pad.id: pad for pad in self.topology.pads()}
        links = []
        for link in self.topology.data_links_from(entity):
            source, sink = pads[link.source], pads[link.sink]
            links.append(mu.media_link_desc(source=mu.media_pad_desc(source.entity, source.index, source.flags),
                                            sink=mu.media_pad_desc(sink.entity, sink.index, sink.flags),
                                            flags=link.flags))
        _copy_array(user, request.links, links)
        return bytes(mu.media_links_enum(entity=request.entity, pads=request.pads, links=request.links))

    def _setup_link(self, arg: bytes, user: UserMemory, caller: Caller) -> bytes:
        raise KernelError(errno.EINVAL, "every link of this device is immutable")

    def _g_topology(self, arg: bytes, user: UserMemory, caller: Caller) -> bytes:
        """media_device_get_topology(); arrays are filled when given, ENOSPC when too small."""
        t = load(mu.media_v2_topology, arg)
        topology = self.topology
        mine = self._last_node(caller.tgid)
        interfaces = sorted(topology.interfaces, key=lambda i: i.node != mine)
        sections = (
            ("entities", [mu.media_v2_entity(id=e.id, name=e.name.encode(), function=e.function)
                          for e in topology.entities]),
            ("interfaces", [mu.media_v2_interface(id=i.id, intf_type=mu.MEDIA_INTF_T_V4L_VIDEO)
                            for i in interfaces]),
            ("pads", [mu.media_v2_pad(id=p.id, entity_id=p.entity, flags=p.flags, index=p.index)
                      for p in topology.pads()]),
            ("links", [mu.media_v2_link(id=link.id, source_id=link.source, sink_id=link.sink, flags=link.flags)
                       for link in topology.links]),
        )
        out = mu.media_v2_topology(topology_version=topology.version)
        for name, items in sections:
            address = getattr(t, f"ptr_{name}")
            if address and getattr(t, f"num_{name}") < len(items):
                raise KernelError(errno.ENOSPC, f"room for {getattr(t, f'num_{name}')} {name}, {len(items)} exist")
            _copy_array(user, address, items)
            setattr(out, f"num_{name}", len(items))
            setattr(out, f"ptr_{name}", address)
        return bytes(out)
