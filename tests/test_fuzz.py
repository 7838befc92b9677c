"""Bad input: the socket protocol fuzzed with 100k invalid requests, device-node ioctls with random
commands and payloads, random bytes written to every file. The daemon and vpu_sim survive all of
it, every refusal is a clear error, and nothing a refused request touched changes.

The generators are seeded random ones (100k hypothesis examples would take minutes here): each
case carries the errno(s) the README's error table allows for it.
"""
from __future__ import annotations

import base64
import errno
import fcntl
import json
import math
import os
import random
import socket
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from typing import Any, Callable, Iterator, Optional

import psutil
import pytest

from memtrackfs.client import MemtrackClient
from memtrackfs.testing.helpers import Mount

MEMTRACK = "sys/kernel/debug/v4l2-memtrack"
MAX_LINE = 1 << 20
CASES = 100_000
BATCH = 5_000  # requests pipelined per connection

NO_ID = object()  # the case's raw line has no decodable id: the reply's id is null


# -- the state the fuzz runs against, and everything it could change ------------------------------

class Board:
    """A mount with trees, buffers, an attachment, a watch and a device node, all held by one
    connection (``setup``) that stays open while the fuzz runs."""

    def __init__(self, mount: Mount) -> None:
        self.mount = mount
        c = self.setup = mount.client(client="fuzz-setup")
        self.root = c.call("root", name="fuzz")["node"]
        self.inst = c.call("node", parent=self.root, name="instance")["node"]
        for name, nbytes in (("fw", 33554432), ("mbi", 917504), ("mbi", 917504)):
            c.call("add", node=self.inst, bytes=nbytes, name=name)
        c.call("add", node=self.inst, bytes=12345)
        self.deep = self.root
        for depth in range(1, 16):
            self.deep = c.call("node", parent=self.deep, name=f"d{depth}")["node"]
        # The once-only warnings, so that a refused request cannot be the first to print them.
        assert c.call("read", node=self.deep)["bytes"] == 0
        with pytest.raises(OSError):
            c.call("node", parent=self.deep, name="too-deep")
        c.call("add", node=self.deep, bytes=7, name="falls-back")  # warns too; counted in its own bytes
        c.call("sub", node=self.inst, bytes=1 << 40)                # underflow warning
        c.call("add", node=self.inst, bytes=4096)
        c.call("root", name="other")
        self.system = c.call("heap_alloc", heap="system", bytes=3 << 20, name="fuzz-system")["buffer"]
        self.cma = c.call("export", exporter="videobuf2_dma_contig", bytes=2 << 20)["buffer"]
        self.attachment = c.call("attach", buffer=self.cma, device="display-subsystem")["attachment"]
        c.call("map", attachment=self.attachment)
        c.call("attach", buffer=self.system, device="ff9a0000.gpu")
        self.allocation = c.call("dma_alloc", bytes=1 << 20)["allocation"]
        c.call("watch", node=self.inst)
        c.call("register_device", name="video5")

    def close(self) -> None:
        self.setup.close()

    def files(self) -> list[str]:
        """Every regular file of the mount, relative (device nodes excluded: they have no content)."""
        found = []
        for top, dirs, names in os.walk(self.mount.path):
            dirs.sort()
            for name in sorted(names):
                path = os.path.join(top, name)
                if stat.S_ISREG(os.stat(path).st_mode) and not name.startswith("video"):
                    found.append(os.path.relpath(path, self.mount.path))
        return found

    def state(self) -> dict[str, Any]:
        """What any request could have changed: every file, the listings, the socket's views."""
        state: dict[str, Any] = {path: self.mount.read(path) for path in self.files() if path != "dev/kmsg"}
        state["dev/kmsg"] = self.mount.kmsg()  # every record, without waiting for more
        state["dev/"] = sorted(os.listdir(self.mount / "dev"))
        for op in ("roots", "buffers", "heaps"):
            reply = self.setup.call(op)
            reply.pop("id")
            state[op] = reply
        for handle in (self.root, self.inst, self.deep):
            state[f"read {handle}"] = self.setup.call("read", node=handle)["bytes"]
        return state


@pytest.fixture
def board(memtrackfs_mount: Mount) -> Iterator[Board]:
    board = Board(memtrackfs_mount)
    try:
        yield board
    finally:
        board.close()


# -- the cases --------------------------------------------------------------------------------------

Case = tuple[bytes, Any, frozenset]  # the line, the id the reply must carry, the errnos allowed


def _ids(rng: random.Random) -> Any:
    return rng.choice([rng.randrange(1 << 31), -rng.randrange(1 << 62), 1 << 100, "req-%d" % rng.randrange(99),
                       None, [1, "two", None], {"n": {"m": [True]}}, 2.5, True, ""])


def _bad_names(rng: random.Random) -> list[tuple[Any, str]]:
    """Names a tracker refuses, with the errno: control characters, NUL, too long, not a string."""
    return [("a\nb", "EINVAL"), ("nul\x00byte", "EINVAL"), ("cr\rlf", "EINVAL"), ("\x1b[31mred", "EINVAL"),
            ("tab\there", "EINVAL"), ("del\x7f", "EINVAL"), ("nel\x85", "EINVAL"), ("lone\ud800", "EINVAL"),
            ("x" * 256, "ENAMETOOLONG"), ("é" * 128, "ENAMETOOLONG"), (12, "EINVAL"), (["fw"], "EINVAL"),
            ({"n": 1}, "EINVAL"), (True, "EINVAL"), (3.5, "EINVAL")]


BAD_BYTES = [-1, -(1 << 63), 1 << 64, (1 << 64) + 5, 10 ** 30, 4096.0, 1.5, "4096", True, False, None, [4096], {}]
BAD_HANDLES = [0, -1, -(1 << 70), 1 << 63, 1 << 64, 1.0, "1", True, None, [1], {"node": 1}]
BAD_IDS = [-5, 1 << 31, 1 << 40, -(1 << 31) - 1, "7", 7.0, True, [7]]
BAD_LABELS = ["", "has space", "new\nline", "nul\x00", "\x1b[0m", "x" * 65, "lsep\u2028", 5, None, ["gpu"]]
BAD_BUFFER_NAMES = ["new\nline", "cr\r", "nul\x00", "\x1b]0;title\x07", "x" * 33, "lsep\u2028", "", 5, ["n"]]


class Generator:
    """Seeded invalid requests, one defect each, against the board's handles."""

    def __init__(self, board: Board, seed: int) -> None:
        self.b = board
        self.rng = random.Random(seed)
        self.unknown = 10 ** 9  # handles, buffers, attachments never handed out
        self.makers: list[Callable[[], tuple[Any, Any]]] = [
            self.random_bytes, self.truncated, self.not_an_object, self.unknown_op, self.tracker, self.tracker,
            self.tracker, self.dmabuf, self.dmabuf, self.misc, self.numbers_as_text, self.long_name,
        ]

    def case(self) -> Case:
        request, allowed, *line_id = self.rng.choice(self.makers)()
        if isinstance(request, bytes):
            return request, line_id[0] if line_id else NO_ID, frozenset(allowed)
        request_id = _ids(self.rng)
        request = {"id": request_id, **request}
        return json.dumps(request).encode(), request_id, frozenset(allowed)

    # raw lines

    def random_bytes(self) -> tuple[bytes, Any]:
        rng = self.rng
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120))).replace(b"\n", b"")
        if not data.strip():
            data = b"\xff" + data
        return data, {"EBADMSG", "ENOSYS"}  # "{}" or "{...}" would be an object with no op

    def truncated(self) -> tuple[bytes, Any]:
        line = json.dumps({"id": 1, "op": "add", "node": self.b.inst, "bytes": 4096, "name": "fw"}).encode()
        return line[:self.rng.randrange(1, len(line))], {"EBADMSG"}

    def not_an_object(self) -> tuple[bytes, Any]:
        return self.rng.choice([b"[1, 2]", b"42", b'"add"', b"null", b"true", b"[]", b"[{\"op\": \"root\"}]",
                                b"[" * 500 + b"]" * 500, b"{\"id\": 1}x", b"{'op': 'root'}"]), {"EBADMSG"}

    def numbers_as_text(self) -> tuple[bytes, Any, Any]:
        number = self.rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-0.0", b"1" * 5000, b"0x10"])
        line = b'{"id": 3, "op": "add", "node": %d, "bytes": %s}' % (self.b.inst, number)
        # 5000 digits are over Python's int limit (not JSON); 0x10 is not JSON at all.
        if number in (b"1" * 5000, b"0x10"):
            return line, {"EBADMSG"}, NO_ID
        if number != b"-0.0" and self.rng.random() < 0.4:
            # In the id itself (or inside it): JSON cannot echo it, so the reply's id is null.
            request_id = self.rng.choice([number, b"[1, %s]" % number, b'{"n": %s}' % number])
            return b'{"id": %s, "op": "roots"}' % request_id, {"EINVAL"}, NO_ID
        return line, {"EINVAL"}, 3

    # requests

    def unknown_op(self) -> tuple[dict, Any]:
        op = self.rng.choice(["launch", "ROOT", "", " add", "add\n", "op_add", "__init__", "close", None, 5,
                              ["add"], {"op": "add"}, "x" * 10000, "r\u00f6\u00f6t"])
        request = {"node": self.b.inst, "bytes": 1}
        if op is not None or self.rng.random() < 0.5:
            request["op"] = op
        return request, {"ENOSYS"}

    def _context(self, request: dict) -> tuple[dict, set]:
        request = dict(request)
        request[self.rng.choice(["tgid", "pid"])] = self.rng.choice(BAD_IDS)
        return request, {"EINVAL"}

    def tracker(self) -> tuple[dict, Any]:
        rng, b = self.rng, self.b
        op = rng.choice(["root", "node", "add", "sub", "set", "read", "destroy", "delay", "watch", "unwatch"])
        defect = rng.random()
        if op == "root":
            if defect < 0.3:
                return {"op": "root", "name": rng.choice(["a/b", "/", "", ".", "..", "fuzz/x"])}, {"EINVAL"}
            if defect < 0.4:
                return {"op": "root", "name": rng.choice(["fuzz", "other"])}, {"EEXIST"}
            if defect < 0.45:
                return {"op": "root"}, {"EINVAL"}
            if defect < 0.55:
                return self._context({"op": "root", "name": "ctx-root"})
            name, code = rng.choice(_bad_names(rng) + [("y" * 65536, "ENAMETOOLONG")] * (rng.random() < 0.05))
            return {"op": "root", "name": name}, {code}
        if op == "node":
            if defect < 0.2:
                return {"op": "node", "parent": b.deep, "name": rng.choice(["deeper", None])}, {"ENOSPC"}
            if defect < 0.4:
                return {"op": "node", "parent": self.unknown + rng.randrange(1000), "name": "n"}, {"ENOENT"}
            if defect < 0.6:
                return {"op": "node", "parent": rng.choice(BAD_HANDLES), "name": "n"}, {"EINVAL"}
            if defect < 0.7:
                return self._context({"op": "node", "parent": b.inst, "name": "n"})
            name, code = rng.choice(_bad_names(rng))
            return {"op": "node", "parent": b.inst, "name": name}, {code}
        if op in ("add", "sub", "set"):
            request = {"op": op, "node": b.inst, "bytes": 4096}
            if op != "set" and rng.random() < 0.5:
                request["name"] = "fw"
            if defect < 0.35:
                request["bytes"] = rng.choice(BAD_BYTES)
                if rng.random() < 0.1:
                    del request["bytes"]
                return request, {"EINVAL"}
            if defect < 0.55:
                request["node"] = self.unknown + rng.randrange(1000)
                return request, {"ENOENT"}
            if defect < 0.7:
                request["node"] = rng.choice(BAD_HANDLES)
                return request, {"EINVAL"}
            if op == "add" and defect < 0.8:
                return self._context(request)
            if op == "set":
                request["bytes"] = rng.choice(BAD_BYTES)
                return request, {"EINVAL"}
            if op == "sub":
                # A sub's name only looks for a leaf (none found: the RFC subtracts from the node's
                # own bytes): any string is valid there, only another type is refused.
                request["name"] = rng.choice([12, ["fw"], {"n": 1}, True, 3.5])
                return request, {"EINVAL"}
            name, code = rng.choice(_bad_names(rng))
            request["name"] = name
            return request, {code}
        if op in ("read", "destroy", "watch"):
            if op == "watch" and defect < 0.3:
                return {"op": "watch", "node": b.inst}, {"EBUSY"}  # the setup connection watches it
            if defect < 0.65:
                return {"op": op, "node": self.unknown + rng.randrange(1000)}, {"ENOENT"}
            return {"op": op, "node": rng.choice(BAD_HANDLES)}, {"EINVAL"}
        if op == "unwatch":
            return {"op": "unwatch", "node": b.inst}, {"EINVAL"}  # not this connection's watch
        # delay
        if defect < 0.5:
            return {"op": "delay", "node": b.inst, "ms": rng.choice([1 << 31, -(1 << 31) - 1, 1.5, "10", None])}, {"EINVAL"}
        return {"op": "delay", "node": self.unknown, "ms": 10}, {"ENOENT"}

    def dmabuf(self) -> tuple[dict, Any]:
        rng, b = self.rng, self.b
        op = rng.choice(["heap_alloc", "export", "get", "put", "attach", "detach", "map", "unmap", "dma_alloc", "dma_free"])
        defect = rng.random()
        if op in ("heap_alloc", "export", "dma_alloc"):
            request: dict[str, Any] = {"op": op, "bytes": 4096}
            if op == "heap_alloc":
                request["heap"] = "system"
            if op == "export":
                request["exporter"] = "panfrost"
            if defect < 0.3:
                request["bytes"] = rng.choice([0, -4096, (1 << 40) + 1, 1 << 64, 1.5, "4096", None, True])
                return request, {"EINVAL"}
            if defect < 0.45:
                request["heap"] = rng.choice(["nonexistent", "linux,cma", "System", "cma "])
                return request, {"ENOENT"}
            if defect < 0.5:
                request["heap"] = rng.choice([5, ["cma"], True])
                return request, {"EINVAL"}
            if op == "dma_alloc":
                request["bytes"] = 0
                return request, {"EINVAL"}
            if defect < 0.7:
                request["name"] = rng.choice(BAD_BUFFER_NAMES)
                return request, {"EINVAL"}
            if defect < 0.8:
                request["comm"] = rng.choice(["new\nline", "\x1b[2J", "lsep\u2028", 7])
                return request, {"EINVAL"}
            if defect < 0.85:
                request["comm"] = "okcomm"  # no name: Rockchip's "<tgid>-<comm>", so the tgid counts
                return self._context(request)
            if op == "export":
                request["exporter"] = rng.choice(BAD_LABELS)
                return request, {"EINVAL"}
            del request["heap"]
            return request, {"EINVAL"}
        if op in ("get", "put", "attach"):
            request = {"op": op, "buffer": b.cma}
            if op == "attach":
                request["device"] = "vop"
            if defect < 0.4:
                request["buffer"] = self.unknown + rng.randrange(1000)
                return request, {"ENOENT"}
            if defect < 0.6:
                request["buffer"] = rng.choice(BAD_HANDLES)
                return request, {"EINVAL"}
            if op == "put":
                return request, {"EBADF"}  # a reference of the setup connection, not this one's
            if op == "attach":
                request["device"] = rng.choice(BAD_LABELS)
                return request, {"EINVAL"}
            request["buffer"] = rng.choice(BAD_HANDLES)
            return request, {"EINVAL"}
        if op in ("detach", "map", "unmap"):
            if defect < 0.4:
                return {"op": op, "attachment": b.attachment}, {"EPERM"}  # the setup connection's
            if defect < 0.7:
                return {"op": op, "attachment": self.unknown + rng.randrange(1000)}, {"ENOENT"}
            return {"op": op, "attachment": rng.choice(BAD_HANDLES)}, {"EINVAL"}
        # dma_free: the setup connection's allocation is not this one's
        if defect < 0.5:
            return {"op": "dma_free", "allocation": rng.choice([b.allocation, self.unknown])}, {"ENOENT"}
        return {"op": "dma_free", "allocation": rng.choice(BAD_HANDLES)}, {"EINVAL"}

    def long_name(self) -> tuple[dict, Any]:
        """Names over every limit, 64 KiB ones now and then (each costs a 64 KiB line)."""
        rng, b = self.rng, self.b
        name = ("n" if rng.random() < 0.5 else "\u00e9") * (65536 if rng.random() < 0.03 else 300)
        request, code = rng.choice([
            ({"op": "root", "name": name}, "ENAMETOOLONG"),
            ({"op": "node", "parent": b.inst, "name": name}, "ENAMETOOLONG"),
            ({"op": "add", "node": b.inst, "bytes": 1, "name": name}, "ENAMETOOLONG"),
            ({"op": "heap_alloc", "heap": "system", "bytes": 1, "name": name}, "EINVAL"),
            ({"op": "export", "exporter": name, "bytes": 1}, "EINVAL"),
            ({"op": "attach", "buffer": b.cma, "device": name}, "EINVAL"),
            ({"op": "register_device", "name": name}, "EINVAL"),
            ({"op": "hello", "client": name}, "EINVAL"),
            ({"op": "log", "message": name if len(name) > 1024 else name * 4}, "EINVAL"),  # over 1024 characters
        ])
        return request, {code}

    def misc(self) -> tuple[dict, Any]:
        rng = self.rng
        op = rng.choice(["hello", "log", "register_device", "complete", "copy_from_user", "copy_to_user"])
        if op == "hello":
            # Never the first request here (every connection starts with another case), or bad fields.
            return {"op": "hello", rng.choice(["client", "destroy_on_close"]): rng.choice(
                ["bad\nname", "x" * 65, 5, "yes", None, "ok"])}, {"EINVAL"}
        if op == "log":
            return rng.choice([{"op": "log", "message": "m", "level": rng.choice([8, -1, 1.0, "6", None])},
                               {"op": "log", "message": rng.choice([None, 5, ["m"]])},
                               {"op": "log", "message": "x" * 1025},
                               {"op": "log"}]), {"EINVAL"}
        if op == "register_device":
            name = rng.choice(["kmsg", "../x", "a/b", "", "Video0", "video 1", "video\n1", "v" * 33, "0video",
                               5, None, "vid\u2028eo", "video5"])
            return {"op": "register_device", "name": name}, {"EEXIST"} if name == "video5" else {"EINVAL"}
        # A connection that serves no node has no calls to complete or copy for. (A refused
        # register_device before may have made it a driver endpoint: then they are ENOENT.)
        fields: dict[str, Any] = {"call": rng.choice([1, 1 << 40])}
        if op == "complete":
            fields["result"] = 0
        elif op == "copy_from_user":
            fields.update(addr=4096, len=8)
        else:
            fields.update(addr=4096, data=base64.b64encode(b"12345678").decode())
        return {"op": op, **fields}, {"EINVAL", "ENOENT"}


# -- sending them ----------------------------------------------------------------------------------

def exchange(path: str, lines: list[bytes]) -> list[dict]:
    """Pipeline the lines on one connection (sent by a thread while this one reads); the replies."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(60)

    def send() -> None:
        s.sendall(b"\n".join(lines) + b"\n")
        s.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    data = []
    while chunk := s.recv(1 << 20):
        data.append(chunk)
    sender.join()
    s.close()
    return [json.loads(line) for line in b"".join(data).splitlines()]


def same_id(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def check_refusal(reply: dict, case: Case) -> Optional[str]:
    line, request_id, allowed = case
    problems = []
    if set(reply) != {"id", "ok", "errno", "error"} or reply["ok"] is not False:
        problems.append("not an error object")
    elif reply["errno"] not in allowed:
        problems.append(f"errno {reply['errno']}, allowed {sorted(allowed)}")
    elif not isinstance(reply["error"], str) or len(reply["error"]) < 15 or "internal error" in reply["error"] \
            or "Traceback" in reply["error"]:
        problems.append("no clear sentence")
    if not same_id(reply.get("id"), None if request_id is NO_ID else request_id):
        problems.append("a different id")
    return None if not problems else f"{', '.join(problems)}: {line[:150]!r} -> {json.dumps(reply)[:300]}"


def test_100k_invalid_requests_are_refused_clearly_and_change_nothing(board: Board) -> None:
    mount = board.mount
    before = board.state()
    daemon_pid = board.setup.server["pid"]
    generator = Generator(board, seed=6)
    failures: list[str] = []
    errnos: dict[str, int] = {}
    sent = 0
    started = time.monotonic()
    while sent < CASES:
        # Each connection starts with a refusal, so that no generated hello is its first request.
        cases = [(b"[]", NO_ID, frozenset({"EBADMSG"}))] + [generator.case() for _ in range(BATCH - 1)]
        replies = exchange(str(mount.socket), [case[0] for case in cases])
        assert len(replies) == len(cases), (f"{len(cases)} requests, {len(replies)} replies: the daemon "
                                            f"dropped the connection after {cases[len(replies)][0][:200]!r}"
                                            if len(replies) < len(cases) else "more replies than requests")
        for reply, case in zip(replies, cases):
            problem = check_refusal(reply, case)
            if problem and len(failures) < 25:
                failures.append(problem)
            errnos[reply.get("errno")] = errnos.get(reply.get("errno"), 0) + 1
        sent += len(cases)
        if sent % 25_000 == 0:  # now and then, not only at the end: nothing changed so far
            assert board.state() == before, f"the state changed within the first {sent} refused requests"
    elapsed = time.monotonic() - started
    assert not failures, "\n".join(failures)
    assert set(errnos) >= {"EBADMSG", "ENOSYS", "EINVAL", "ENAMETOOLONG", "ENOENT", "EEXIST", "ENOSPC", "EBUSY",
                           "EBADF", "EPERM"}, errnos
    after = board.state()
    for key in before:
        assert after[key] == before[key], key
    assert after == before
    os.kill(daemon_pid, 0)  # still there
    assert elapsed < 60, f"{CASES} cases took {elapsed:.0f} s"


# -- lines the protocol must refuse whatever they say ---------------------------------------------

def test_a_line_over_1_mib_is_refused_whatever_it_holds(board: Board) -> None:
    """README: E2BIG for a request line over 1 MiB, discarded; the connection lives on. Here the
    lines are valid requests padded past the limit, by 1 byte and by 64 KiB: none may be applied."""
    before = board.state()
    lines = []
    for over in (1, 1000, 65536, 1 << 20):
        head = b'{"id": %d, "op": "add", "node": %d, "bytes": 5, "name": "huge", "pad": "' % (over, board.inst)
        lines.append(head + b"p" * (MAX_LINE + over - len(head) - 2) + b'"}')
        assert len(lines[-1]) == MAX_LINE + over
    lines.append(b'{"id": "after", "op": "roots"}')
    replies = exchange(str(board.mount.socket), lines)
    assert [(r.get("id"), r.get("errno")) for r in replies] == [(None, "E2BIG")] * 4 + [("after", None)], replies
    assert board.state() == before


def test_deeply_nested_json_is_ebadmsg_not_an_internal_error(board: Board) -> None:
    replies = exchange(str(board.mount.socket), [b"[" * 100_000, b'{"id": 1, "op": "x", "a": ' + b"{\"a\": " * 50_000,
                                                 b'{"id": 2, "op": "roots"}'])
    assert [r.get("errno") for r in replies[:2]] == ["EBADMSG", "EBADMSG"], replies[:2]
    assert replies[2]["ok"] is True


def test_an_id_the_reply_cannot_encode_does_not_cost_the_connection(board: Board) -> None:
    """A lone surrogate (valid JSON text, "\\ud800") as the request id: whatever the daemon answers
    to it, the connection, and whatever it holds, must not be dropped (README: a refused request
    never closes the connection)."""
    before = board.state()
    replies = exchange(str(board.mount.socket), [b'{"id": "\\ud800", "op": "read", "node": %d}' % board.inst,
                                                 b'{"id": "\\udfff", "op": "no-such-op"}',
                                                 b'{"id": 3, "op": "read", "node": %d}' % board.inst])
    assert len(replies) == 3 and replies[2] == {"id": 3, "ok": True, "bytes": before[f"read {board.inst}"]}, replies
    assert replies[1]["errno"] == "ENOSYS"


def test_a_refused_register_device_leaves_the_connection_as_it_was(board: Board) -> None:
    """A connection that serves no node has no calls in flight: complete is EINVAL ("register_device
    first"). A register_device refused for its name must not change that."""
    lines = [b'{"id": 1, "op": "complete", "call": 1, "result": 0}',
             b'{"id": 2, "op": "register_device", "name": "Bad/Name"}',
             b'{"id": 3, "op": "complete", "call": 1, "result": 0}']
    replies = exchange(str(board.mount.socket), lines)
    assert [r["errno"] for r in replies] == ["EINVAL", "EINVAL", "EINVAL"], replies


# -- device nodes ------------------------------------------------------------------------------------

# argv: mount, seed, count. Random ioctls on the decoder and encoder nodes (two open files each,
# non-blocking, so a DQBUF with nothing done returns EAGAIN instead of waiting), through ctypes'
# ioctl (fcntl.ioctl cannot pass any pointer). Prints one line per call: cmd, errno, seconds.
IOCTL_FUZZER = r"""
import ctypes, os, random, sys, time
from vpu_sim import uapi
libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
mnt, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
fds = [os.open(f"{mnt}/dev/video{n}", os.O_RDWR | os.O_NONBLOCK) for n in (0, 1, 0, 1)]
v4l2 = [value for name, value in vars(uapi).items() if name.startswith("VIDIOC_")]
types = [uapi.V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE, uapi.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE, 1, 2, 0, 0xFFFFFFFF]
# Ioctls the VFS answers itself for a regular file, before the filesystem sees them.
VFS = {0x5451, 0x5450, 0x5421, 0x5452, 0x5460, 0x541B, 0x2, 0xC0045877, 0xC0045878, 0x40049409, 0x4020940D,
       0xC0189436, 0xC020660B, 0x80086601, 0x40086602, 0x801C581F, 0x401C5820}
buf = ctypes.create_string_buffer(16384)
out = []
for _ in range(count):
    kind = rng.random()
    if kind < 0.5:
        cmd = rng.choice(v4l2)
    elif kind < 0.8:
        cmd = (rng.randrange(4) << 30) | (rng.randrange(1 << 14) << 16) | (ord("V") << 8) | rng.randrange(256)
    else:
        cmd = rng.randrange(1 << 32)
    if cmd in VFS:
        continue
    size, direction = (cmd >> 16) & 0x3FFF, cmd >> 30
    payload = bytes(rng.randrange(256) for _ in range(min(size, 512))) + bytes(max(0, size - 512))
    if size >= 4 and rng.random() < 0.6:  # a real buffer type first, to get past the first check
        payload = rng.choice(types).to_bytes(4, "little") + payload[4:]
    if rng.random() < 0.3:
        payload = bytes(size)
    ctypes.memmove(buf, payload, size)
    arg = ctypes.addressof(buf)
    if direction == 0 or rng.random() < 0.03:
        arg = rng.choice([0, 1, 4096, rng.randrange(1 << 47), ctypes.addressof(buf)])
    started = time.monotonic()
    ret = libc.ioctl(rng.choice(fds), cmd, arg)
    took = time.monotonic() - started
    out.append(f"{cmd:#010x} {0 if ret == 0 else ctypes.get_errno()} {took:.3f}")
for fd in fds:
    os.close(fd)
print("\n".join(out))
"""


def test_random_ioctls_on_the_vpu_nodes_are_answered_and_nothing_breaks(vpu_board: Mount) -> None:
    mount = vpu_board
    with MemtrackClient(str(mount.socket)) as c:
        memtrackfs_pid = c.server["pid"]
        heaps_before = [(h["name"], h["used"]) for h in c.call("heaps")["heaps"]]
    tree_before = mount.tree()
    fuzzer = subprocess.run([sys.executable, "-c", IOCTL_FUZZER, str(mount.path), "6", "3000"],
                            capture_output=True, text=True, timeout=300)
    assert fuzzer.returncode == 0, fuzzer.stderr[-2000:]
    calls = [line.split() for line in fuzzer.stdout.splitlines()]
    assert len(calls) > 2500
    results: dict[int, int] = {}
    for cmd, code, took in calls:
        # Answered: success or an errno, never ETIMEDOUT (vpu_sim did not answer), never slow.
        assert int(code) != errno.ETIMEDOUT and float(took) < 2.0, f"ioctl {cmd}: errno {code} after {took} s"
        results[int(code)] = results.get(int(code), 0) + 1
    assert results.get(0, 0) > 50 and results.get(errno.ENOTTY, 0) > 100 and results.get(errno.EINVAL, 0) > 100, results
    # Both daemons are up; the closed files' instances and buffers are gone, the heaps as before.
    os.kill(memtrackfs_pid, 0)
    assert (mount / "dev/video0").exists() and (mount / "dev/video1").exists()
    deadline = time.monotonic() + 10
    while mount.tree() != tree_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mount.tree() == tree_before
    with MemtrackClient(str(mount.socket)) as c:
        assert [(h["name"], h["used"]) for h in c.call("heaps")["heaps"]] == heaps_before
    assert mount.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n"
    for node in ("dev/video0", "dev/video1"):
        fd = os.open(mount / node, os.O_RDWR)
        try:
            for call in (lambda: os.read(fd, 100), lambda: os.write(fd, os.urandom(100))):
                with pytest.raises(OSError) as refused:
                    call()
                assert refused.value.errno == errno.EINVAL
        finally:
            os.close(fd)
    done = subprocess.run([sys.executable, "-m", "vpu_sim", "play", "--mount", str(mount.path), "--seconds", "0.5"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and " frames" in done.stdout, done.stderr


# -- writes ---------------------------------------------------------------------------------------

def test_random_bytes_written_to_every_file(board: Board) -> None:
    """Read-only files refuse with EIO (root passes the permission check, as on procfs); peak takes
    a write starting with '0' and refuses anything else with EINVAL; control refuses what is not a
    query with EINVAL (E2BIG from 4096 bytes); dev/kmsg makes a record of each write up to 1024
    bytes and refuses longer ones with EINVAL. Nothing else changes."""
    mount = board.mount
    rng = random.Random(6)
    files = board.files()
    assert {"proc/rk_dmabuf/peak", "sys/kernel/debug/dynamic_debug/control", "dev/kmsg",
            f"{MEMTRACK}/fuzz", "sys/kernel/debug/dma_buf/bufinfo", "proc/rk_dma_heap/alloc_bitmap",
            f"sys/kernel/dmabuf/buffers/{board.system}/size"} <= set(files)
    before = board.state()
    assert before["proc/rk_dmabuf/peak"] == b"Peak: 5 MiB\n"
    resets = records = too_big = 0
    for path in files:
        writable = stat.S_IMODE(os.stat(mount / path).st_mode) & 0o200
        assert writable == (0o200 if path in ("proc/rk_dmabuf/peak", "sys/kernel/debug/dynamic_debug/control",
                                              "dev/kmsg") else 0)
        for i in range(25):
            data = os.urandom(rng.choice([1, 2, 16, 100, 4096, 65536]))
            if i == 0:
                data = b"0" + data            # peak: a reset
            elif data[:1] == b"0":
                data = b"1" + data[1:]        # peak: a refusal
            if path.endswith("control") and i < 6:
                data = [b"file v4l2-memtrack.c +x\n", b"+p\n", b"file v4l2-memtrack.c\n", b"func +p",
                        b"file nosuch.c +p\n", b"file v4l2-memtrack.c +p\n\xff"][i]
            fd = os.open(mount / path, os.O_WRONLY | (os.O_TRUNC if i % 5 == 0 else 0))
            try:
                written = os.pwrite(fd, data, rng.choice([0, 0, 1, 4096]))
                code = 0
            except OSError as exc:
                written, code = 0, exc.errno
            finally:
                os.close(fd)
            if path == "proc/rk_dmabuf/peak" and data[:1] == b"0":
                assert (code, written) == (0, len(data)), (path, data[:20])
                resets += 1
            elif path == "dev/kmsg":
                assert (code, written) == ((0, len(data)) if len(data) <= 1024 else (errno.EINVAL, 0))
                records += code == 0
            elif writable:
                # control: 4096 bytes or more are E2BIG before any parsing, as ddebug_proc_write(),
                # which says so in the kernel log.
                refusal = errno.E2BIG if path.endswith("control") and len(data) >= 4096 else errno.EINVAL
                assert code == refusal, (path, data[:40], code)
                too_big += refusal == errno.E2BIG
            else:
                assert code == errno.EIO, (path, code)
    assert resets == 1
    after = board.state()
    assert len(after["dev/kmsg"]) == len(before["dev/kmsg"]) + records + too_big
    assert after.pop("proc/rk_dmabuf/peak") == b"Peak: 0 MiB\n"
    before.pop("proc/rk_dmabuf/peak")
    assert after["buffers"].pop("peak") == 0
    before["buffers"].pop("peak")
    new_records = after["dev/kmsg"][len(before["dev/kmsg"]):]
    refusals = [record for record in new_records if record.split(";", 1)[1] == "dyndbg: expected <4096 bytes into control"]
    assert too_big and len(refusals) == too_big and all(record.startswith("4,") for record in refusals)
    after["dev/kmsg"] = after["dev/kmsg"][:len(before["dev/kmsg"])]
    for key in before:
        assert after[key] == before[key], key


def test_a_line_dribbled_in_small_pieces_costs_linear_time(board: Board) -> None:
    """A request line sent 16 bytes at a time (each piece received on its own) must cost the
    daemon the same per piece whether the line is 256 KiB or 1 MiB long (joining the pieces
    again at every piece made it quadratic: a core for 4 such clients). A ratio of CPU time
    within one run, not a speed figure."""
    daemon = psutil.Process(board.setup.server["pid"])

    def cpu_per_piece(length: int) -> float:
        line = (b'{"id": 1, "op": "roots", "pad": "' + b"p" * length)[:length - 2] + b'"}'
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(board.mount.socket))
            before = sum(daemon.cpu_times()[:2])
            for i in range(0, len(line), 16):
                s.send(line[i:i + 16])
                while struct.unpack("i", fcntl.ioctl(s, termios.TIOCOUTQ, b"\0" * 4))[0]:
                    pass  # until the daemon has read the piece: each piece is one recv()
            s.send(b"\n")
            s.settimeout(120)
            assert s.recv(4096).startswith(b'{"roots":[')
            return (sum(daemon.cpu_times()[:2]) - before) / (len(line) // 16)

    small, large = cpu_per_piece(1 << 18), cpu_per_piece((1 << 20) - 64)
    assert large < 2.5 * small, f"CPU per piece: {small * 1e6:.1f} us at 256 KiB, {large * 1e6:.1f} us at 1 MiB"


def test_nan_and_infinity_are_refused_never_echoed(board: Board) -> None:
    """JSON has no NaN or Infinity (Python's json reads them): a reply echoing one would not be JSON."""
    lines = [b'{"id": NaN, "op": "roots"}', b'{"id": [Infinity], "op": "roots"}', b'{"id": 1e999, "op": "roots"}',
             b'{"id": 4, "op": "read", "node": %d, "x": -Infinity}' % board.inst, b'{"id": 5, "op": "roots"}']
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(board.mount.socket))
        s.sendall(b"\n".join(lines) + b"\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk

    def strict(constant: str) -> None:
        raise AssertionError(f"the reply holds {constant}, which is not JSON")

    replies = [json.loads(line, parse_constant=strict) for line in data.splitlines()]
    assert [(r["id"], r.get("errno")) for r in replies] == [(None, "EINVAL"), (None, "EINVAL"), (None, "EINVAL"),
                                                           (4, "EINVAL"), (5, None)], replies
