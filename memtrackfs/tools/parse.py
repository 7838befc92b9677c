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
# proc/mpp_service/sessions-summary: the 5.10 guide's line, and the 6.1 dump's lines
_MPP_TOTAL = re.compile(r"^(\S+) Total: (\d+) KiB$")
_MPP_BUFFER = re.compile(r"^ *\d+: 0x([0-9a-f]{16})\.\.0x([0-9a-f]{16}) \( *\d+ (?:KiB|Bytes)\)$")
_MPP_SESSION = re.compile(r"^session: pid=(-?\d+) index=(-?\d+)$")


class TrackedNode(NamedTuple):
    depth: int
    name: Optional[str]
    leaf: bool
    tgid: int
    pid: int
    usage: int
    count: Optional[int]   # None when the file does not show it
    own: Optional[int]     # ``self=``, shown only for nodes with children


class MppSession(NamedTuple):
    pid: int                 # the opening thread's id
    index: int
    device: str
    buffers: tuple[int, ...]  # bytes of each buffer in its IOVA table, least recently used first


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


def parse_mpp_sessions_summary(text: str) -> tuple[dict[str, int], list[MppSession]]:
    """``proc/mpp_service/sessions-summary`` in either BSP's form: the KiB each device's sessions
    hold, and (6.1's dump only) the sessions themselves. ValueError if malformed."""
    totals: dict[str, int] = {}
    sessions: list[MppSession] = []
    sizes: list[int] = []
    pid_index: Optional[tuple[int, int]] = None
    for line in _lines(text):
        if (m := _MPP_TOTAL.match(line)) is not None:
            totals[m.group(1)] = totals.get(m.group(1), 0) + int(m.group(2))
        elif line == "session iova range dump:":
            sizes, pid_index = [], None
        elif (m := _MPP_BUFFER.match(line)) is not None:
            sizes.append(int(m.group(2), 16) - int(m.group(1), 16) + 1)
        elif (m := _MPP_SESSION.match(line)) is not None:
            pid_index = int(m.group(1)), int(m.group(2))
        elif line.startswith(" device: ") and pid_index is not None:
            device = line[len(" device: "):]
            sessions.append(MppSession(*pid_index, device, tuple(sizes)))
            totals[device] = totals.get(device, 0) + sum(sizes) // 1024
        elif not (line.startswith(" memory: ") or line.startswith("|") or set(line) == {"-"}):
            raise ValueError(f"malformed sessions-summary line {line!r}")
    return totals, sessions
