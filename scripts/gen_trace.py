#!/usr/bin/env python3
"""Generate random v4l2-memtrack traces for golden tests.

The output follows the trace format of ``docs/spec/trace-format.md`` (one operation per line:
``as``, ``root``, ``node``, ``add``, ``sub``, ``set``, ``delay``, ``destroy``, ``show``, ``read``).
A trace is meant to be fed to the oracle (the RFC's own C code, ``shared/oracle``) to produce the
expected output, and to ``memtrackfs replay`` to check it.

The generator keeps a model of the tree so that every trace is well defined for the C oracle:

* IDs are fresh (never reused) and below 1,000,000;
* an ID is never used again once it, or an ancestor of it, was destroyed;
* ``show`` only names live nodes (never a null ID from a failed creation);
* IDs whose creation failed (depth limit, null parent) *are* used later in add/sub/set/delay/
  read/node/destroy lines: the RFC treats them as NULL (nothing happens, ``read`` prints 0);
* two live roots never share a name and no root is named ``-`` (a name is reused only after the
  root that had it was destroyed, as a module reload does);
* byte counts are in [0, 2**63 - 1] (the oracle parses them with ``%ld``).

The trace exercises named and unnamed nodes, deep chains past the depth limit (a node at depth
>= 16 is refused; a named add on a depth-15 node falls back to the node's own counter), named
adds, matched named subs (same name and size as an existing leaf, duplicates included),
unmatched named subs and unnamed subs (with underflows), ``set`` (including 0), ``delay``,
``destroy`` of subtrees and whole roots holding memory, many ``as TGID PID`` contexts (some with
a zero tgid or pid), ``read`` and ``show`` lines.

Usage::

    scripts/gen_trace.py --seed 1 --ops 5000 --out trace.txt [--show-rate 0.03]

``--ops`` body operations are generated, then one final ``show`` per live root. The same
arguments always give the same file.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

MAX_DEPTH = 16  # the RFC refuses to create a node or a leaf at depth >= 16
MAX_ID = 999_999  # the oracle's node table holds IDs 0..999999
U64 = 2**64
MAX_BYTES = 2**63 - 1  # largest value the oracle's %ld can read
PAGE = 4096

NODE_NAMES = [
    "fw", "rpc", "instance", "output", "capture", "bitstream-ring-buffer", "udata", "mbi",
    "dcp", "enc-frame", "ref-frame", "act", "log", "stream", "queue", "plane0", "plane1",
    "dmabuf", "vb2-buf", "ctx@0", "core:0", "core:1", "session.1", "scratch_buf", "-tmp",
]
ROOT_NAMES = [
    "amphion-vpu", "amphion-vpu.1", "hantro-vpu", "rkvdec", "rkvenc", "mtk-vcodec-dec",
    "mtk-vcodec-enc", "imx-jpeg", "wave5-vpu", "cedrus", "venus-core", "coda@30000000",
    "vpu:dec", "vpu_enc", "isp0",
]
REALISTIC_SIZES = [
    0x2000000, 0x100000, 0x200000, 0x700000, 0x600000, 0xC0000, 0x80000, 0xC00000, 0x300000,
    0x3000000, 0x1000, 917504, 2040000, 8100000, 3194880, 2359296, 1310720, 8355840, 4423680,
    2949120, 1638400, 2076672, 1040384, 3110400, 3112960, 131072, 8388608,
]
HUGE_SIZES = [MAX_BYTES, MAX_BYTES - 1, 2**62, 2**63 - 4096, 2**61 + 12345]
DELAYS = [-1, 0, 0, 200, 200, 1, 1000, 50]
NAME_CHARS = string.ascii_letters + string.digits + "_.-@:"
BASE_CONTEXTS = [
    (1, 1), (0, 0), (0, 123), (456, 0), (2, 2), (143, 143), (1000, 1000), (1234, 1234),
    (1234, 1237), (2001, 2001), (2001, 2003), (4194304, 4194304), (31337, 31340),
]


@dataclass
class Node:
    """The generator's model of one non-leaf node (the only kind a trace can name)."""

    nid: int
    name: str | None
    depth: int
    parent: Node | None
    children: list[Node] = field(default_factory=list)
    leaves: list[tuple[str, int]] = field(default_factory=list)
    own: int = 0

    def total(self) -> int:
        """The subtree usage, wrapping at 2**64 like the RFC's size_t sums."""
        s = self.own + sum(b for _, b in self.leaves) + sum(c.total() for c in self.children)
        return s % U64

    def subtree(self) -> list[Node]:
        """This node and all its descendants, pre-order."""
        out = [self]
        for c in self.children:
            out.extend(c.subtree())
        return out


@dataclass
class State:
    """Everything the generator knows while writing one trace."""

    rng: random.Random
    lines: list[str] = field(default_factory=list)
    live: dict[int, Node] = field(default_factory=dict)
    roots: list[Node] = field(default_factory=list)
    null_ids: list[int] = field(default_factory=list)
    contexts: list[tuple[int, int]] = field(default_factory=lambda: list(BASE_CONTEXTS))
    next_id: int = 1
    chains: int = 0

    def emit(self, line: str) -> None:
        self.lines.append(line)

    def fresh_id(self) -> int:
        """A never used ID; sometimes leaves a gap so IDs are not dense."""
        nid = self.next_id
        gap = self.rng.randint(1, 40) if self.rng.random() < 0.1 else 0
        self.next_id = nid + 1 + gap
        if nid > MAX_ID:
            raise SystemExit("trace too long: IDs would exceed 999999")
        return nid

    def leaf_count(self) -> int:
        return sum(len(n.leaves) for n in self.live.values())


# ---------------------------------------------------------------- value pickers


def random_token(rng: random.Random, lo: int, hi: int) -> str:
    """A random name token of [A-Za-z0-9_.-@:], never just '-'."""
    while True:
        tok = "".join(rng.choice(NAME_CHARS) for _ in range(rng.randint(lo, hi)))
        if tok != "-":
            return tok


def pick_name(rng: random.Random) -> str:
    """A node or leaf name: mostly realistic, sometimes random, rarely very long (<= 255)."""
    r = rng.random()
    if r < 0.75:
        return rng.choice(NODE_NAMES)
    if r < 0.97:
        return random_token(rng, 1, 24)
    return random_token(rng, 100, 255)


def pick_root_name(st: State) -> str:
    """A root name not used by any live root (so never a duplicate file), never '-'."""
    used = [r.name for r in st.roots]
    for _ in range(100):
        if st.rng.random() < 0.7:
            name = st.rng.choice(ROOT_NAMES)
        else:
            name = "vpu-" + random_token(st.rng, 1, 12)
        if name not in used:
            return name
    return f"root-{st.next_id}"


def pick_bytes(rng: random.Random) -> int:
    """A byte count: mostly realistic, some small, some zero, a few huge (< 2**63)."""
    r = rng.random()
    if r < 0.40:
        return PAGE * int(2 ** rng.uniform(0, 12))
    if r < 0.72:
        return rng.choice(REALISTIC_SIZES)
    if r < 0.86:
        return rng.randint(1, 4095)
    if r < 0.92:
        return 0
    if r < 0.995:
        return rng.randint(1, 2**32)
    return rng.choice(HUGE_SIZES)


def pick_context(st: State) -> tuple[int, int]:
    """A calling context: mostly a known one, sometimes a new thread or process."""
    rng = st.rng
    if rng.random() < 0.75:
        return rng.choice(st.contexts)
    if rng.random() < 0.5:
        tgid = rng.choice(st.contexts)[0]
        ctx = (tgid, rng.randint(0, 40000))
    else:
        pid = rng.randint(1, 4194304)
        ctx = (rng.choice([pid, pid, 0]), rng.choice([pid, pid, pid, 0]))
    st.contexts.append(ctx)
    return ctx


def pick_live(st: State, deep_bias: bool = False) -> Node:
    """A live node; with deep_bias, prefer deeper ones."""
    nodes = list(st.live.values())
    if deep_bias:
        return max(st.rng.sample(nodes, min(3, len(nodes))), key=lambda n: n.depth)
    return st.rng.choice(nodes)


def pick_target_id(st: State, null_share: float = 0.08) -> int:
    """An ID for add/sub/set/read: a live node, or sometimes a null one."""
    if st.null_ids and st.rng.random() < null_share:
        return st.rng.choice(st.null_ids)
    return pick_live(st).nid


# ---------------------------------------------------------------- operations


def op_as(st: State) -> None:
    tgid, pid = pick_context(st)
    st.emit(f"as {tgid} {pid}")


def op_root(st: State) -> None:
    node = Node(st.fresh_id(), pick_root_name(st), 0, None)
    st.live[node.nid] = node
    st.roots.append(node)
    st.emit(f"root {node.nid} {node.name}")


def create_node(st: State, parent: Node | None, parent_id: int, name: str | None) -> Node | None:
    """Emit a `node` line; model the RFC's NULL result for a null parent or the depth limit."""
    nid = st.fresh_id()
    st.emit(f"node {nid} {parent_id} {name or '-'}")
    if parent is None or parent.depth + 1 >= MAX_DEPTH:
        st.null_ids.append(nid)
        return None
    node = Node(nid, name, parent.depth + 1, parent)
    parent.children.append(node)
    st.live[nid] = node
    return node


def op_node(st: State) -> None:
    name = pick_name(st.rng) if st.rng.random() < 0.6 else None
    if st.null_ids and st.rng.random() < 0.06:
        create_node(st, None, st.rng.choice(st.null_ids), name)
        return
    parent = pick_live(st, deep_bias=st.rng.random() < 0.5)
    create_node(st, parent, parent.nid, name)


def model_add(node: Node, nbytes: int, name: str | None) -> None:
    """The RFC's add: a leaf when named and depth allows, else the node's own counter."""
    if name is not None and node.depth + 1 < MAX_DEPTH:
        node.leaves.append((name, nbytes))
    else:
        node.own = (node.own + nbytes) % U64


def model_sub_own(node: Node, nbytes: int) -> None:
    """The RFC's direct subtraction: clamps at 0 on underflow."""
    node.own = 0 if node.own < nbytes else node.own - nbytes


def emit_add(st: State, nid: int, nbytes: int, name: str | None) -> None:
    st.emit(f"add {nid} {nbytes} {name or '-'}")
    if nid in st.live:
        model_add(st.live[nid], nbytes, name)


def op_add_named(st: State) -> None:
    """A named add; often a copy of an existing leaf (several mbi of one size, say)."""
    nid = pick_target_id(st)
    node = st.live.get(nid)
    if node is not None and node.leaves and st.rng.random() < 0.25:
        name, nbytes = st.rng.choice(node.leaves)
    else:
        name, nbytes = pick_name(st.rng), pick_bytes(st.rng)
    emit_add(st, nid, nbytes, name)


def op_add_unnamed(st: State) -> None:
    nid = pick_target_id(st)
    emit_add(st, nid, pick_bytes(st.rng), None)


def op_sub_matched(st: State) -> None:
    """A named sub that matches a leaf (name and size); the first match is removed."""
    holders = [n for n in st.live.values() if n.leaves]
    if not holders:
        op_sub_unnamed(st)
        return
    node = st.rng.choice(holders)
    leaf = st.rng.choice(node.leaves)
    node.leaves.remove(leaf)  # list.remove drops the first equal entry, as the RFC does
    st.emit(f"sub {node.nid} {leaf[1]} {leaf[0]}")


def unmatched_sub_name(st: State, node: Node) -> tuple[str, int]:
    """A (name, bytes) pair that matches no leaf of node: size or name differ."""
    rng = st.rng
    r = rng.random()
    if node.leaves and r < 0.4:
        name, size = rng.choice(node.leaves)
        nbytes = size + rng.choice([1, PAGE, -1 if size else 1])
    elif node.children and r < 0.6:
        name = node.children[0].name or pick_name(rng)  # a non-leaf child never matches
        nbytes = pick_bytes(rng)
    else:
        name, nbytes = pick_name(rng), pick_bytes(rng)
    nbytes = min(max(nbytes, 0), MAX_BYTES)
    if (name, nbytes) in node.leaves:
        name = name + "-x" if len(name) < 250 else "nomatch"
    return name, nbytes


def op_sub_named_miss(st: State) -> None:
    """A named sub with no matching leaf: falls back to the node's own bytes."""
    if st.null_ids and st.rng.random() < 0.08:
        st.emit(f"sub {st.rng.choice(st.null_ids)} {pick_bytes(st.rng)} {pick_name(st.rng)}")
        return
    node = pick_live(st)
    name, nbytes = unmatched_sub_name(st, node)
    st.emit(f"sub {node.nid} {nbytes} {name}")
    model_sub_own(node, nbytes)


def op_sub_unnamed(st: State) -> None:
    """An unnamed sub: sometimes within the node's own bytes, often an underflow."""
    nid = pick_target_id(st)
    node = st.live.get(nid)
    r = st.rng.random()
    if node is not None and node.own and r < 0.3:
        nbytes = min(node.own, MAX_BYTES)
    elif node is not None and node.own and r < 0.55:
        nbytes = st.rng.randint(0, min(node.own, MAX_BYTES))
    else:
        nbytes = pick_bytes(st.rng)
    st.emit(f"sub {nid} {nbytes} -")
    if node is not None:
        model_sub_own(node, nbytes)


def op_set(st: State) -> None:
    nid = pick_target_id(st)
    nbytes = 0 if st.rng.random() < 0.3 else pick_bytes(st.rng)
    st.emit(f"set {nid} {nbytes}")
    if nid in st.live:
        st.live[nid].own = nbytes


def op_delay(st: State) -> None:
    nid = pick_target_id(st)
    st.emit(f"delay {nid} {st.rng.choice(DELAYS)}")


def kill_subtree(st: State, node: Node) -> None:
    """Forget a destroyed subtree: none of its IDs is used again."""
    for n in node.subtree():
        del st.live[n.nid]
    if node.parent is None:
        st.roots.remove(node)
    else:
        node.parent.children.remove(node)


def op_destroy(st: State) -> None:
    """Destroy a subtree, preferring ones that hold memory; sometimes a whole root."""
    rng = st.rng
    if st.null_ids and rng.random() < 0.05:
        st.emit(f"destroy {rng.choice(st.null_ids)}")
        return
    inner = [n for n in st.live.values() if n.parent is not None]
    if not inner or rng.random() < 0.12:
        node = rng.choice(st.roots)
    else:
        holding = [n for n in inner if n.total()]
        pool = holding if holding and rng.random() < 0.75 else inner
        node = rng.choice(pool)
    st.emit(f"destroy {node.nid}")
    kill_subtree(st, node)


def op_read(st: State) -> None:
    st.emit(f"read {pick_target_id(st, null_share=0.15)}")


def op_show(st: State) -> None:
    node = st.rng.choice(st.roots) if st.rng.random() < 0.6 else pick_live(st)
    st.emit(f"show {node.nid}")


def op_chain(st: State) -> None:
    """A deep chain from a live node down past the depth limit, with adds at depths 14..17."""
    rng = st.rng
    start = pick_live(st, deep_bias=True)
    parent: Node | None = start
    parent_id = start.nid
    by_depth: dict[int, int] = {}
    for depth in range(parent.depth + 1, MAX_DEPTH + 2):
        name = rng.choice([None, "deep", f"d{depth}", pick_name(rng)])
        child = create_node(st, parent, parent_id, name)
        parent_id = child.nid if child else st.null_ids[-1]
        by_depth[depth] = parent_id
        parent = child
    for depth in (MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1):
        if depth in by_depth:
            emit_add(st, by_depth[depth], pick_bytes(rng), pick_name(rng))
    if MAX_DEPTH - 1 in by_depth:
        emit_add(st, by_depth[MAX_DEPTH - 1], PAGE, None)
    st.emit(f"read {by_depth[MAX_DEPTH]}")
    st.emit(f"show {by_depth.get(MAX_DEPTH - 1, start.nid)}")
    st.chains += 1


# ---------------------------------------------------------------- driver

OPS = {
    "as": op_as, "root": op_root, "node": op_node, "chain": op_chain,
    "add_named": op_add_named, "add_unnamed": op_add_unnamed, "sub_matched": op_sub_matched,
    "sub_named_miss": op_sub_named_miss, "sub_unnamed": op_sub_unnamed, "set": op_set,
    "delay": op_delay, "destroy": op_destroy, "read": op_read,
}


def op_weights(st: State) -> dict[str, float]:
    """Weights of the next operation, steering the trees to a bounded, varied size."""
    nodes, leaves, roots = len(st.live), st.leaf_count(), len(st.roots)
    return {
        "as": 6,
        "root": 2.0 if roots < 3 else (0.3 if roots < 6 else 0.0),
        "node": 9 if nodes < 50 else 1.5,
        "chain": 0.25,
        "add_named": 18 if leaves < 120 else 4,
        "add_unnamed": 9,
        "sub_matched": 0.0 if not leaves else (10 if leaves < 120 else 24),
        "sub_named_miss": 4,
        "sub_unnamed": 7,
        "set": 3,
        "delay": 1.5,
        "destroy": 1.2 + nodes / 25,
        "read": 5,
    }


def next_op(st: State, ops: int) -> str:
    """Choose the next operation; forces a root when none is live and one deep chain early."""
    if not st.roots:
        return "root"
    if st.chains == 0 and len(st.lines) >= ops // 4:
        return "chain"
    weights = op_weights(st)
    names = list(weights)
    return st.rng.choices(names, weights=[weights[n] for n in names])[0]


def generate(seed: int, ops: int, show_rate: float) -> list[str]:
    """The trace lines for a seed: `ops` body operations, then a show of each live root."""
    st = State(random.Random(seed))
    st.emit(f"# gen_trace.py --seed {seed} --ops {ops} --show-rate {show_rate}")
    body_start = len(st.lines)
    while len(st.lines) - body_start < ops:
        OPS[next_op(st, ops)](st)
        if st.roots and st.rng.random() < show_rate:
            op_show(st)
    del st.lines[body_start + ops:]  # a prefix of a valid trace is valid
    st.lines.extend(final_shows(st, st.lines[body_start:]))
    return st.lines


def final_shows(st: State, body: list[str]) -> list[str]:
    """Show every root still live after the (possibly trimmed) body, by replaying liveness."""
    roots: dict[int, None] = {}
    for line in body:
        f = line.split()
        if f[0] == "root":
            roots[int(f[1])] = None
        elif f[0] == "destroy":
            roots.pop(int(f[1]), None)
    return [f"show {rid}" for rid in roots]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Generate a random v4l2-memtrack trace.")
    p.add_argument("--seed", type=int, required=True, help="random seed")
    p.add_argument("--ops", type=int, required=True, help="number of body operations")
    p.add_argument("--out", type=Path, required=True, help="output trace file ('-' = stdout)")
    p.add_argument("--show-rate", type=float, default=0.03,
                   help="probability of a `show` after each operation (default 0.03)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    text = "\n".join(generate(args.seed, args.ops, args.show_rate)) + "\n"
    if str(args.out) == "-":
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="ascii")
    return 0


if __name__ == "__main__":
    sys.exit(main())
