"""The v4l2-memtrack tracking core: the RFC's node tree, with subtree totals kept incrementally.

Semantics follow the RFC's ``v4l2-memtrack.c`` exactly (``../shared/oracle`` is the judge); the
data structures differ so that no operation re-sums a subtree:

- every ``Node`` keeps ``total`` (its subtree usage) and each change walks its ancestors once,
  so an update costs O(depth) and ``read``/rendering cost O(1) per node;
- named allocations are ``Leaf`` objects, immutable after creation (the RFC never changes a
  leaf's size and hands out no pointer to one), kept in an insertion-ordered dict of children and
  indexed by ``(name, bytes)`` so the leaf a named ``sub`` removes is found without a scan.

Pure model: no locks, no I/O, no threads. The owner (``Kernel``) serialises every call, delivers
notifications from ``notify_due`` after releasing its lock, and cancels the delayed ones of the
nodes in ``notify_dropped``.
"""
from __future__ import annotations

import errno
import re
from collections import deque
from typing import Callable, Iterator, Optional, Union

from memtrackfs.errors import KernelError
from memtrackfs.model.kmsg import DebugSite, KernelLog

MAX_DEPTH = 16
SIZE_MAX = (1 << 64) - 1    # size_t: byte counts wrap like the kernel's
COUNT_MAX = (1 << 32) - 1   # unsigned int: alloc_count wraps like the kernel's
NAME_MAX = 255

NotifyCallback = Callable[["Node", int], None]

# The two pr_debug() sites of the RFC's file, with their real line numbers, for dynamic debug.
SOURCE_FILE = "drivers/media/common/v4l2-memtrack/v4l2-memtrack.c"
MODULE = "v4l2_memtrack"
LEAK_NODE_SITE = DebugSite(SOURCE_FILE, 798, MODULE, "v4l2_memtrack_print_visitor",
                           "v4l2-memtrack: %*s%s%s: usage=%zu bytes, count=%u\n")
LEAK_HEADER_SITE = DebugSite(SOURCE_FILE, 816, MODULE, "v4l2_memtrack_print_debug",
                             "v4l2-memtrack: Memory Tracker: %s\n")


def debug_sites() -> list[DebugSite]:
    """Fresh (disabled) copies of the tracker's debug sites, one set per emulated kernel."""
    return [DebugSite(**vars(site)) for site in (LEAK_NODE_SITE, LEAK_HEADER_SITE)]


class Leaf:
    """A named allocation (``add`` with a name): count 1, never has children."""

    __slots__ = ("name", "bytes", "tgid", "pid")

    def __init__(self, name: str, nbytes: int, tgid: int, pid: int) -> None:
        self.name = name
        self.bytes = nbytes
        self.tgid = tgid
        self.pid = pid


class Node:
    """A tracking node: own bytes and count, children (nodes and leaves) in creation order."""

    __slots__ = ("name", "parent", "depth", "tgid", "pid", "own", "count", "total",
                 "children", "leaf_index", "alive", "notify", "notify_delay_ms")

    def __init__(self, name: Optional[str], parent: Optional["Node"], tgid: int, pid: int) -> None:
        self.name = name
        self.parent = parent
        self.depth = 0 if parent is None else parent.depth + 1
        self.tgid = tgid
        self.pid = pid
        self.own = 0
        self.count = 0
        self.total = 0  # subtree usage; kept exact here, reduced modulo 2**64 when shown
        self.children: dict[Union[Node, Leaf], None] = {}
        # (name, bytes) -> the matching leaves, oldest first: one Leaf, or a deque of several
        self.leaf_index: dict[tuple[str, int], Union[Leaf, deque[Leaf]]] = {}
        self.alive = True
        self.notify: Optional[NotifyCallback] = None
        self.notify_delay_ms = 0

    @property
    def usage(self) -> int:
        """The subtree's usage as the kernel's size_t shows it."""
        return self.total & SIZE_MAX

    def root(self) -> "Node":
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    def walk(self) -> Iterator[tuple[int, Union["Node", Leaf]]]:
        """Pre-order (depth, item) over the subtree, children in creation order (the RFC's order)."""
        yield self.depth, self
        for child in self.children:
            if type(child) is Leaf:
                yield self.depth + 1, child
            else:
                yield from child.walk()


# Names that would make their line of v4l2-memtrack/<root> read as another one: empty or with a
# leading space (another depth), ending in "[leaf]" (a leaf) or in "(tgid=N, pid=N)" (another
# process's node, when the node's own context is not shown). The RFC prints any name; real
# drivers use fixed ones, so refusing these costs no fidelity, and every reader can parse the
# file from the end of each line (docs/spec/emulated-files.md).
_AMBIGUOUS = re.compile(r"\A(?: |\Z)|(?:\A| )\[leaf\]\Z|\(tgid=-?\d+, pid=-?\d+\)\Z")


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise KernelError(errno.EINVAL, "a name must be a string")
    if not name.isprintable():  # control, format, separator (U+2028...) or surrogate characters
        raise KernelError(errno.EINVAL,
                          f"name {name!r} contains a control character (or another unprintable one): refused, it could forge lines")
    if _AMBIGUOUS.search(name):
        raise KernelError(errno.EINVAL, f"name {name!r} would read as another line in v4l2-memtrack: refused "
                                        "(no empty name, leading space, or '[leaf]' or '(tgid=N, pid=N)' at its end)")
    if len(name.encode("utf-8")) > NAME_MAX:
        raise KernelError(errno.ENAMETOOLONG, f"name is longer than {NAME_MAX} bytes")


class Tracker:
    """All tracker roots of one emulated kernel, and the RFC's operations on their nodes."""

    # Valid names seen recently, interned so a million leaves share one string object.
    _NAME_CACHE_MAX = 4096

    def __init__(self, log: KernelLog) -> None:
        self.log = log
        self.roots: dict[str, Node] = {}
        self.notify_due: list[Node] = []  # nodes whose callbacks an operation triggered
        self.notify_dropped: list[Node] = []  # destroyed nodes, whose delayed notifications are cancelled
        self._names: dict[str, str] = {}
        sites = {site.function: site for site in log.sites}
        self._header_site = sites[LEAK_HEADER_SITE.function]
        self._node_site = sites[LEAK_NODE_SITE.function]

    def _name(self, name: str) -> str:
        known = self._names.get(name)
        if known is not None:
            return known
        _check_name(name)
        if len(self._names) >= self._NAME_CACHE_MAX:
            self._names.clear()
        self._names[name] = name
        return name

    def _propagate(self, node: Node, delta: int) -> None:
        """Apply a usage change to node and its ancestors; queue their notifications (RFC order)."""
        cur: Optional[Node] = node
        while cur is not None:
            cur.total += delta
            if cur.notify is not None and cur.notify_delay_ms >= 0:
                self.notify_due.append(cur)
            cur = cur.parent

    # -- creation ---------------------------------------------------------------------------

    def create_root(self, name: str, tgid: int, pid: int) -> Node:
        name = self._name(name)
        if name in ("", ".", "..") or "/" in name:
            raise KernelError(errno.EINVAL, f"root name {name!r} cannot be a debugfs file name")
        if name in self.roots:
            raise KernelError(errno.EEXIST, f"a tracker root named {name!r} already exists")
        root = Node(name, None, tgid, pid)
        self.roots[name] = root
        return root

    def create_node(self, parent: Node, name: Optional[str], tgid: int, pid: int) -> Node:
        if name is not None:
            name = self._name(name)
        if parent.depth + 1 >= MAX_DEPTH:
            self.log.warn_once("create_node:depth",
                               f"v4l2-memtrack: max depth {MAX_DEPTH} reached, cannot create child node")
            raise KernelError(errno.ENOSPC, f"max depth {MAX_DEPTH} reached, cannot create child node")
        node = Node(name, parent, tgid, pid)
        parent.children[node] = None
        return node

    # -- accounting -------------------------------------------------------------------------

    def add(self, node: Node, nbytes: int, name: Optional[str], tgid: int, pid: int) -> None:
        if name is not None:
            name = self._name(name)
            if node.depth + 1 < MAX_DEPTH:
                self._add_leaf(node, nbytes, name, tgid, pid)
                self._propagate(node, nbytes)
                return
            # The RFC falls back to the node's own counter when the leaf would be too deep.
            self.log.warn_once("add:depth", f"v4l2-memtrack: max depth {MAX_DEPTH} reached")
        old = node.own
        node.own = (old + nbytes) & SIZE_MAX
        node.count = (node.count + 1) & COUNT_MAX
        self._propagate(node, node.own - old)

    def _add_leaf(self, node: Node, nbytes: int, name: str, tgid: int, pid: int) -> None:
        key = (name, nbytes)
        found = node.leaf_index.get(key)
        if found is None:
            node.leaf_index[key] = leaf = Leaf(name, nbytes, tgid, pid)
        elif type(found) is Leaf:
            # Share the int object with the existing leaf: a million equal leaves, one int.
            leaf = Leaf(name, found.bytes, tgid, pid)
            node.leaf_index[key] = deque((found, leaf))
        else:
            leaf = Leaf(name, found[0].bytes, tgid, pid)
            found.append(leaf)
        node.children[leaf] = None

    def sub(self, node: Node, nbytes: int, name: Optional[str]) -> None:
        if name is not None:
            leaf = self._take_leaf(node, (name, nbytes))
            if leaf is not None:
                del node.children[leaf]
                self._propagate(node, -nbytes)
                return
        old = node.own
        if old < nbytes:
            self.log.warn_once("sub:underflow",
                               f"v4l2-memtrack: {node.name if node.name is not None else '(unnamed)'}: bytes underflow")
            node.own = 0
        else:
            node.own = old - nbytes
        if node.count > 0:
            node.count -= 1
        self._propagate(node, node.own - old)

    @staticmethod
    def _take_leaf(node: Node, key: tuple[str, int]) -> Optional[Leaf]:
        """Unindex and return the oldest leaf child with this name and size, if any."""
        found = node.leaf_index.get(key)
        if found is None:
            return None
        if type(found) is Leaf:
            del node.leaf_index[key]
            return found
        leaf = found.popleft()
        if len(found) == 1:
            node.leaf_index[key] = found[0]
        return leaf

    def set(self, node: Node, nbytes: int) -> None:
        old = node.own
        node.own = nbytes
        node.count = 1 if nbytes else 0
        self._propagate(node, nbytes - old)

    @staticmethod
    def read(node: Node) -> int:
        return node.usage

    # -- notifications ----------------------------------------------------------------------

    @staticmethod
    def register_notify(node: Node, callback: NotifyCallback) -> None:
        if node.notify is not None:
            raise KernelError(errno.EBUSY, "this node already has a notify callback")
        node.notify = callback

    @staticmethod
    def unregister_notify(node: Node) -> None:
        node.notify = None

    @staticmethod
    def set_notify_delay(node: Node, delay_ms: int) -> None:
        node.notify_delay_ms = delay_ms

    # -- destruction ------------------------------------------------------------------------

    def destroy(self, node: Node) -> list[Node]:
        """Remove node's subtree (a root: its file too); return the nodes that died, pre-order."""
        if node.usage:
            self._leak_report(node)
        dead = [n for _, n in node.walk() if type(n) is Node]
        for n in dead:
            n.alive = False
            n.notify = None
        self.notify_dropped.extend(dead)
        parent = node.parent
        if parent is None:
            del self.roots[node.name]
        else:
            del parent.children[node]
            self._propagate(parent, -node.total)
        return dead

    def _leak_report(self, node: Node) -> None:
        """v4l2_memtrack_print_debug(): the subtree, printed with pr_debug before it goes."""
        root_name = node.root().name
        self.log.debug(self._header_site,
                       f"v4l2-memtrack: Memory Tracker: {root_name if root_name is not None else '(unnamed)'}")
        if not self._node_site.enabled:
            return  # skip formatting a large subtree nobody will see
        for depth, item in node.walk():
            if type(item) is Leaf:
                kind, usage, count = " [leaf]", item.bytes, 1
            else:
                kind, usage, count = "", item.usage, item.count
            shown = item.name if item.name is not None else "(unnamed)"
            self.log.debug(self._node_site,
                           f"v4l2-memtrack: {'':{depth * 2}}{shown}{kind}: usage={usage} bytes, count={count}")
