"""Parsers of the kernel files, for tools that read them as a user would (snapshot, record).

They read what the kernel prints, so they work on a real board as well as on a mount.
"""
from __future__ import annotations

import re
from typing import NamedTuple, Optional

_NODE = re.compile(r"^( *)(?:(.+?) )?(\[leaf\] )?(?:\(tgid=(-?\d+), pid=(-?\d+)\) )?usage: (\d+)"
                   r"(?: \(count=(\d+)(?:, self=(\d+))?\))?$")
_TOTAL = re.compile(r"^Total memory usage: (\d+) bytes$")
# "%px %-16.16s %-16.16s %10lu KiB" then " %s" per attached device
_RK_DEV = re.compile(r"^([0-9a-f]{16}) (.{16}) (.{16}) +(\d+) KiB((?: \S+)*)$")


class TrackedNode(NamedTuple):
    depth: int
    name: Optional[str]
    leaf: bool
    tgid: int
    pid: int
    usage: int
    count: Optional[int]   # None when the file does not show it
    own: Optional[int]     # ``self=``, shown only for nodes with children


class RkBuffer(NamedTuple):
    id: str
    name: str       # as shown: truncated to 16 columns, "(null)" when unnamed
    exporter: str   # likewise truncated
    kib: int
    devices: tuple[str, ...]


def _lines(text: str) -> list[str]:
    """The file's lines: only "\n" ends one, as in the kernel (str.splitlines would also split
    at U+2028 and other separators a name might hold)."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def parse_memtrack(text: str) -> tuple[int, list[TrackedNode]]:
    """A ``v4l2-memtrack/<root>`` file: (total, nodes in pre-order). ValueError if malformed."""
    lines = _lines(text)
    total = _TOTAL.match(lines[0]) if lines else None
    if total is None:
        raise ValueError("not a v4l2-memtrack file: no 'Total memory usage' line")
    nodes = []
    for line in lines[1:]:
        m = _NODE.match(line)
        if m is None:
            raise ValueError(f"malformed v4l2-memtrack line {line!r}")
        indent, name, leaf, tgid, pid, usage, count, own = m.groups()
        nodes.append(TrackedNode(len(indent) // 2, name, leaf is not None, int(tgid or 0), int(pid or 0),
                                 int(usage), None if count is None else int(count),
                                 None if own is None else int(own)))
    return int(total.group(1)), nodes


def parse_rk_dmabuf_dev(text: str) -> list[RkBuffer]:
    """Rockchip's ``proc/rk_dmabuf/dev``: one entry per buffer, newest first."""
    buffers = []
    for line in _lines(text)[2:]:
        m = _RK_DEV.match(line)
        if m is None:
            raise ValueError(f"malformed rk_dmabuf/dev line {line!r}")
        buffers.append(RkBuffer(m.group(1), m.group(2).rstrip(), m.group(3).rstrip(), int(m.group(4)),
                                tuple(m.group(5).split())))
    return buffers


def parse_first_number(text: str) -> int:
    """``Total: N KiB`` / ``Peak: N MiB``: the number."""
    m = re.search(r"(\d+)", text)
    if m is None:
        raise ValueError(f"no number in {text!r}")
    return int(m.group(1))
