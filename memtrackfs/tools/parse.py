"""Parsers of the kernel files, for tools that read them as a user would (snapshot, record).

They read what the kernel prints, so they work on a real board as well as on a mount. A line is
read from its end, whose format is fixed, so a name cannot pass for the fields after it; what
cannot be read is a ValueError naming the line, never a guess.
"""
from __future__ import annotations

import re
from typing import NamedTuple, Optional, Union

_TOTAL = re.compile(r"^Total memory usage: (\d+) bytes$")
# The fixed end of a v4l2-memtrack line, right to left: " (count=C[, self=S])", "usage: N", the
# context "(tgid=T, pid=P) " and "[leaf] " (each after the name and a space, if there is one).
_USAGE = re.compile(r"(?:\A| )usage: (\d+)(?: \(count=(\d+)(?:, self=(\d+))?\))?\Z")
_CONTEXT = re.compile(r"(?:\A| )\(tgid=(-?\d+), pid=(-?\d+)\)\Z")
_LEAF = re.compile(r"(?:\A| )\[leaf\]\Z")
# "%px %-16.16s %-16.16s %10lu KiB" then " %s" per attached device: columns of bytes (a name is
# cut at 16 bytes, possibly inside a UTF-8 character).
_RK_DEV = re.compile(rb"^([0-9a-f]{16}) (.{16}) (.{16}) +(\d+) KiB((?: \S+)*)$", re.DOTALL)
# proc/mpp_service/sessions-summary: the 5.10 guide's line, and the 6.1 dump's lines
_MPP_TOTAL = re.compile(r"^(\S+) Total: (\d+) KiB$")
_MPP_BUFFER = re.compile(r"^ *\d+: 0x([0-9a-f]{16})\.\.0x([0-9a-f]{16}) \( *\d+ (?:KiB|Bytes)\)$")
_MPP_SESSION = re.compile(r"^session: pid=(-?\d+) index=(-?\d+)$")
# rk_dmabuf/sgt: the buffer's prefix on its first segment, spaces on the others, then the segment
_RK_SGT = re.compile(r"^(?:([0-9a-f]{16}) (.{16}) (.{16}) +(\d+) KiB| {65}) *(\d+): 0x([0-9a-f]{16})\.\.0x([0-9a-f]{16}) ")
# dma_buf_debug_show(): "%08zu\t%08x\t%08x\t%08ld\t%s\t%08lu\t%s"
_BUFINFO = re.compile(r"^(\d+)\t([0-9a-f]+)\t([0-9a-f]+)\t(\d+)\t([^\t]*)\t(\d+)\t(.*)$")
_BITMAP_TOTAL = re.compile(r"^Total: (\d+) KiB$")
_BITMAP_USED = re.compile(r"^ Used: (\d+) KiB$")


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
    name: str       # as shown: truncated to 16 bytes, "(null)" when unnamed
    exporter: str   # likewise truncated
    kib: int
    devices: tuple[str, ...]


def _lines(text: str) -> list[str]:
    """The file's lines: only "\\n" ends one, as in the kernel (str.splitlines would also split
    at U+2028 and other separators a name might hold)."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _node(text: str, depth: int) -> Optional[TrackedNode]:
    """One node line without its indentation, read from its end; None if it is not one."""
    usage = _USAGE.search(text)
    if usage is None:
        return None
    head = text[:usage.start()]
    tgid = pid = 0
    context = _CONTEXT.search(head)
    if context is not None:
        tgid, pid = int(context.group(1)), int(context.group(2))
        head = head[:context.start()]
    leaf = _LEAF.search(head)
    if leaf is not None:
        head = head[:leaf.start()]
    total, count, own = usage.groups()
    return TrackedNode(depth, head or None, leaf is not None, tgid, pid, int(total),
                       None if count is None else int(count), None if own is None else int(own))


def parse_memtrack(text: str, root: Optional[str] = None) -> tuple[int, list[TrackedNode]]:
    """A ``v4l2-memtrack/<root>`` file: (total, nodes in pre-order). ValueError if malformed.

    ``root``, the file's name, is the first node's name: read with it, a root name holding
    spaces, "[leaf]" or even a newline is still the root. A line that does not read as a node is
    the start of a name holding a newline and is joined to the next. A deeper indentation than a
    child's is the name's own leading spaces, and a "leaf" with a child was a node whose name ends
    in " [leaf]" (a file the RFC printed from any name). The context is read from the end of the
    line, so a name cannot pass for it where the context is shown, as it always is on a board.
    """
    lines = _lines(text)
    total = _TOTAL.match(lines[0]) if lines else None
    if total is None:
        raise ValueError("not a v4l2-memtrack file: no 'Total memory usage' line")
    nodes: list[TrackedNode] = []
    pending: list[str] = []  # lines of a name holding "\n", so far
    parent_depth = -1        # the depth of the last node that can be a parent (not a leaf)
    for line in lines[1:]:
        line = "\n".join([*pending, line])
        if not nodes:
            if root is not None and line.startswith(root):
                found = _node(line[len(root):].lstrip(" ") if line != root else "", 0)
                found = found._replace(name=root) if found is not None and not found.leaf else None
            else:
                found = _node(line, 0)
        else:
            indent = len(line) - len(line.lstrip(" "))
            previous = nodes[-1]
            if indent // 2 == previous.depth + 1 and previous.leaf:
                # A child of a "leaf": it was a node whose name ends in " [leaf]".
                nodes[-1] = previous._replace(name=f"{previous.name} [leaf]" if previous.name else "[leaf]", leaf=False)
                parent_depth = previous.depth
            depth = max(1, min(indent // 2, parent_depth + 1))
            found = _node(line[2 * depth:], depth)
        if found is None:
            pending.append(line.rsplit("\n", 1)[-1])
            if len(pending) > 64:
                raise ValueError(f"malformed v4l2-memtrack line {pending[0]!r}")
            continue
        pending = []
        nodes.append(found)
        if not found.leaf:
            parent_depth = found.depth
    if pending:
        raise ValueError(f"malformed v4l2-memtrack line {pending[0]!r}")
    if nodes and nodes[0].leaf:
        raise ValueError("malformed v4l2-memtrack file: its first node is a leaf")
    return int(total.group(1)), nodes


def parse_rk_dmabuf_dev(data: Union[bytes, str]) -> list[RkBuffer]:
    """Rockchip's ``proc/rk_dmabuf/dev``: one entry per buffer, newest first. Best read as bytes
    (its columns are 16 bytes wide); text is encoded back to UTF-8 first."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogateescape")
    buffers = []
    lines = data.split(b"\n")
    for line in lines[2:-1] if lines[-1] == b"" else lines[2:]:
        m = _RK_DEV.match(line)
        if m is None:
            raise ValueError(f"malformed rk_dmabuf/dev line {line!r}")
        text = [field.decode("utf-8", errors="replace") for field in m.groups()]
        buffers.append(RkBuffer(text[0], text[1].rstrip(" "), text[2].rstrip(" "), int(text[3]),
                                tuple(text[4].split())))
    return buffers


class RkSegments(NamedTuple):
    id: str                               # the buffer's address, as rk_dmabuf/dev shows it
    segments: tuple[tuple[int, int], ...]  # (DMA address, length in bytes)


class BufInfo(NamedTuple):
    size: int
    flags: int
    mode: int
    count: int            # references: fds and attachments
    exporter: str
    ino: int
    name: Optional[str]   # None for "<none>"
    devices: tuple[str, ...]  # attached, newest first


class CmaBitmap(NamedTuple):
    total_kib: int
    used_kib: int
    allocated: bytes      # one byte per page, 1 = allocated (the bitmap as cma->bitmap holds it)

    def free_ranges(self) -> list[tuple[int, int]]:
        """(first page, pages) of every run of free pages."""
        return [(m.start(), m.end() - m.start()) for m in re.finditer(rb"\x00+", self.allocated)]


def parse_rk_dmabuf_sgt(text: str) -> list[RkSegments]:
    """Rockchip's ``proc/rk_dmabuf/sgt``: the scatter list of each mapped buffer, newest first."""
    found: list[RkSegments] = []
    for line in _lines(text)[2:]:
        m = _RK_SGT.match(line)
        if m is None:
            raise ValueError(f"malformed rk_dmabuf/sgt line {line!r}")
        start, end = int(m.group(6), 16), int(m.group(7), 16)
        if m.group(1) is not None:
            found.append(RkSegments(m.group(1), ()))
        elif not found:
            raise ValueError(f"rk_dmabuf/sgt segment line before any buffer: {line!r}")
        found[-1] = found[-1]._replace(segments=found[-1].segments + ((start, end - start + 1),))
    return found


def parse_bufinfo(text: str) -> list[BufInfo]:
    """debugfs ``dma_buf/bufinfo``: every buffer, newest first, with its attached devices. Lines
    this parser does not know (a kernel's fence lines) are skipped."""
    buffers: list[BufInfo] = []
    in_devices = False
    for line in _lines(text):
        m = _BUFINFO.match(line)
        if m is not None:
            size, flags, mode, count, exporter, ino, name = m.groups()
            buffers.append(BufInfo(int(size), int(flags, 16), int(mode, 16), int(count), exporter, int(ino),
                                   None if name == "<none>" else name, ()))
            in_devices = False
        elif line == "\tAttached Devices:":
            in_devices = True
        elif in_devices and line.startswith("\t") and buffers:
            buffers[-1] = buffers[-1]._replace(devices=buffers[-1].devices + (line[1:],))
        else:
            in_devices = False
    return buffers


def parse_alloc_bitmap(text: str) -> CmaBitmap:
    """Rockchip's ``proc/rk_dma_heap/alloc_bitmap``: totals, then cma->bitmap as u32 words (bit n of
    a word is its n-th page), eight a line."""
    lines = _lines(text)
    total = _BITMAP_TOTAL.match(lines[0]) if lines else None
    used = _BITMAP_USED.match(lines[1]) if len(lines) > 1 else None
    if total is None or used is None:
        raise ValueError("not an alloc_bitmap file: no 'Total: N KiB' and ' Used: N KiB' lines")
    pages = int(total.group(1)) // 4
    allocated = bytearray()
    for word in " ".join(lines[3:]).split():
        value = int(word, 16)
        allocated += bytes((value >> bit) & 1 for bit in range(32))
    return CmaBitmap(int(total.group(1)), int(used.group(1)), bytes(allocated[:pages]))


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


# rk_dma_heap_proc_show(): records start "dma-heap:<HEAP> -dmabuf" or "-non dmabuf"; the file ends
# with the rk heaps' total. "\tAlloc by (%-20s)\t[%pa-%pa]\t%pa (%lu KiB)\n"
_HEAP_RECORD = re.compile(r"dma-heap:<([^>\n]*)> -(dmabuf|non dmabuf)")
_HEAP_TOTAL = re.compile(r"\nTotal : 0x([0-9a-f]+) \((\d+) KiB\)\n\Z")
_HEAP_ALLOC = re.compile(r"\tAlloc by \((.*)\)\t\[0x([0-9a-f]{16})-0x([0-9a-f]{16})\]"
                         r"\t0x([0-9a-f]{16}) \((\d+) KiB\)\n")
_HEAP_DMABUF = re.compile(r"\ti_ino = (\d+)\n" + _HEAP_ALLOC.pattern + r"\t\tAttached Devices:\n((?:\t\t.*\n)*)"
                          r"Total (\d+) devices attached\n\n\Z")
# mpp_show_device_load(): "%-25s load: %3d.%02d%% utilization: %3d.%02d%%"
_MPP_LOAD = re.compile(r"^(\S+) +load: +(\d+)\.(\d\d)% utilization: +(\d+)\.(\d\d)%$")


class HeapAllocation(NamedTuple):
    heap: str
    owner: str              # "Alloc by": a dma-buf's name ("(null)": none), or who took memory without one
    address: int            # the first byte's physical address
    size: int
    ino: Optional[int]      # the dma-buf's inode; None for memory without a dma-buf
    devices: tuple[str, ...]  # a dma-buf's attached devices, newest first


class DmaHeapInfo(NamedTuple):
    allocations: list[HeapAllocation]  # as the file lists them: per heap, dma-bufs then the rest
    foreign: list[str]   # heaps of records left unfinished: dma-bufs exported under a heap's name, not by it
    total: int           # bytes the rk heaps hold (the last line)


def parse_dma_heap_info(text: str) -> DmaHeapInfo:
    """Rockchip's ``proc/rk_dma_heap/dma_heap_info`` (or its debugfs twin). ValueError if malformed."""
    end = _HEAP_TOTAL.search(text)
    if end is None:
        raise ValueError("not a dma_heap_info file: no 'Total : 0x... (N KiB)' line at its end")
    body = text[:end.start()]
    starts = list(_HEAP_RECORD.finditer(body))
    if (starts[0].start() if starts else len(body)) != 0:
        raise ValueError(f"malformed dma_heap_info: {body[:60]!r} is no record")
    allocations: list[HeapAllocation] = []
    foreign: list[str] = []
    for record, following in zip(starts, [*starts[1:], None]):
        heap, kind = record.groups()
        rest = body[record.end():following.start() if following is not None else len(body)]
        if kind == "dmabuf" and rest == "":
            foreign.append(heap)
            continue
        if kind == "dmabuf":
            m = _HEAP_DMABUF.match(rest)
            devices = tuple(line[2:] for line in m.group(7).split("\n")[:-1]) if m is not None else ()
            if m is None or len(devices) != int(m.group(8)):
                raise ValueError(f"malformed dma_heap_info record of heap {heap}: {rest[:80]!r}")
            ino, (owner, first, last, size) = int(m.group(1)), m.group(2, 3, 4, 5)
        else:
            m = _HEAP_ALLOC.fullmatch(rest.removeprefix("\n"))
            if not rest.startswith("\n") or m is None:
                raise ValueError(f"malformed dma_heap_info record of heap {heap}: {rest[:80]!r}")
            ino, devices, (owner, first, last, size) = None, (), m.group(1, 2, 3, 4)
        address, length = int(first, 16), int(size, 16)
        if int(last, 16) != address + length - 1:
            raise ValueError(f"dma_heap_info: [{first}-{last}] is not {length} bytes")
        allocations.append(HeapAllocation(heap, owner.rstrip(" "), address, length, ino, devices))
    return DmaHeapInfo(allocations, foreign, int(end.group(1), 16))


def parse_mpp_load(text: str) -> dict[str, tuple[int, int]]:
    """``proc/mpp_service/load`` (6.1): each core's load and utilization in hundredths of a
    percent; {} while it shows the hint to set load_interval. ValueError if malformed."""
    lines = _lines(text)
    if lines and lines[0] == "please set load_interval first!!!":
        return {}
    found = {}
    for line in lines:
        m = _MPP_LOAD.match(line)
        if m is None:
            raise ValueError(f"malformed load line {line!r}")
        found[m.group(1)] = (int(m.group(2)) * 100 + int(m.group(3)), int(m.group(4)) * 100 + int(m.group(5)))
    return found


def parse_u32(text: str) -> int:
    """An mpp_service u32 file (``"%d\\n"``, so values past 2^31 print negative): the u32."""
    if re.fullmatch(r"-?\d+\n", text) is None:
        raise ValueError(f"not a number: {text[:40]!r}")
    return int(text) & 0xFFFFFFFF
