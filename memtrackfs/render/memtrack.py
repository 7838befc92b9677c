"""Renderer of ``sys/kernel/debug/v4l2-memtrack/<root>``: ``v4l2_memtrack_seq_show`` byte for byte."""
from __future__ import annotations

from memtrackfs.model.tracker import Leaf, Node


def render_memtrack(root: Node) -> bytes:
    """v4l2_memtrack_seq_show(): the debugfs file of one tracker root: the total, then every node
    in pre-order."""
    out = [f"Total memory usage: {root.usage} bytes\n"]
    _render_subtree(root, out)
    return "".join(out).encode("utf-8")


def _render_subtree(node: Node, out: list[str]) -> None:
    line = " " * (node.depth * 2)
    if node.name is not None:
        line += node.name + " "
    if node.tgid and node.pid:
        line += f"(tgid={node.tgid}, pid={node.pid}) "
    line += f"usage: {node.usage}"
    children = node.children
    count = node.count
    if count > 1 or (count == 1 and children):
        line += f" (count={count}, self={node.own})" if children else f" (count={count})"
    out.append(line + "\n")
    # Leaves are the bulk of a big tree: one f-string each, no helper call.
    leaf_indent = " " * (node.depth * 2 + 2)
    append = out.append
    for child in children:
        if type(child) is Leaf:
            if child.tgid and child.pid:
                append(f"{leaf_indent}{child.name} [leaf] (tgid={child.tgid}, pid={child.pid}) usage: {child.bytes}\n")
            else:
                append(f"{leaf_indent}{child.name} [leaf] usage: {child.bytes}\n")
        else:
            _render_subtree(child, out)
