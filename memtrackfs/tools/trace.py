"""Parser of the memtrack trace format (``docs/spec/trace-format.md``).

One operation per line; ``#`` starts a comment line; blank lines are skipped; ``-`` as a name
means no name. The parser checks the shape of each line and nothing about the tree: what a line
does to the tree (including a failed creation leaving its ID null) is for the replayer.
"""
from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple, Optional

from memtrackfs.model.tracker import SIZE_MAX


class TraceError(ValueError):
    """A malformed trace line; the message names the line."""


class TraceOp(NamedTuple):
    lineno: int
    op: str
    id: int                  # the line's target ID (for `as`: the tgid)
    arg: int                 # parent ID (node), bytes (add/sub/set), ms (delay), pid (as); else 0
    name: Optional[str]      # root/node/add/sub name; None for '-' (except roots: see below)


# op -> the fields after the op word: I = an ID or integer, B = bytes, N = name, M = signed ms
_SHAPES = {
    "as": "II", "root": "IN", "node": "IIN", "add": "IBN", "sub": "IBN", "set": "IB",
    "delay": "IM", "destroy": "I", "show": "I", "read": "I",
}
_INT32_MAX = 2**31 - 1


def _number(word: str, lo: int, hi: int, what: str, lineno: int) -> int:
    try:
        value = int(word, 10)
    except ValueError:
        raise TraceError(f"line {lineno}: {what} {word!r} is not a decimal integer") from None
    if not lo <= value <= hi:
        raise TraceError(f"line {lineno}: {what} {value} is outside {lo}..{hi}")
    return value


def parse_trace(lines: Iterable[str]) -> Iterator[TraceOp]:
    for lineno, line in enumerate(lines, 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        op, args = words[0], words[1:]
        shape = _SHAPES.get(op)
        if shape is None:
            raise TraceError(f"line {lineno}: unknown operation {op!r}")
        if len(args) != len(shape):
            raise TraceError(f"line {lineno}: {op!r} takes {len(shape)} fields, got {len(args)}")
        values: list = []
        name: Optional[str] = None
        for kind, word in zip(shape, args):
            if kind == "I":
                values.append(_number(word, 0, _INT32_MAX, "ID" if op != "as" else "tgid/pid", lineno))
            elif kind == "B":
                values.append(_number(word, 0, SIZE_MAX, "byte count", lineno))
            elif kind == "M":
                values.append(_number(word, -_INT32_MAX - 1, _INT32_MAX, "delay", lineno))
            else:
                # The oracle passes a root's name through as written (even '-').
                name = word if (word != "-" or op == "root") else None
        values += [0] * (2 - len(values))
        yield TraceOp(lineno, op, values[0], values[1], name)
