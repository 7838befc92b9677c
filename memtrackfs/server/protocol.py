"""Wire format of the driver socket: one JSON object per line, each way.

Request: ``{"id": ANY, "op": NAME, ...fields}``; reply: ``{"id": ANY, "ok": true, ...results}`` or
``{"id": ANY, "ok": false, "errno": "EINVAL", "error": "sentence"}``. Events the server pushes
on its own carry ``"event"`` instead of ``"ok"``.
"""
from __future__ import annotations

import errno
import json
import math
from typing import Any, Optional

from memtrackfs.errors import KernelError

PROTOCOL_VERSION = 1
MAX_LINE = 1 << 20  # a longer request is answered E2BIG and discarded; the connection lives on

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class _NotFinite(Exception):
    """NaN, Infinity or a float too large (1e400): JSON cannot say them, so no reply could echo
    them. Raised by the strict decoder; the lenient one marks them (``_Marked``) instead."""


class _Marked:
    __slots__ = ()


def _refuse(text: str) -> Any:
    raise _NotFinite(text)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _mark_float(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else _Marked()


# The strict decoder costs nothing more than json's own for requests without floats; the lenient
# one only runs to answer a refused request under its id.
_decode = json.JSONDecoder(parse_constant=_refuse, parse_float=_finite).decode
_decode_marking = json.JSONDecoder(parse_constant=lambda text: _Marked(), parse_float=_mark_float).decode


class RequestError(KernelError):
    """A request refused as a whole, answered under ``request_id`` (None: it had no usable id)."""

    def __init__(self, code: int, message: str, request_id: Any = None) -> None:
        super().__init__(code, message)
        self.request_id = request_id


def _holds_marked(value: Any) -> bool:
    if isinstance(value, _Marked):
        return True
    if isinstance(value, dict):
        return any(_holds_marked(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_marked(v) for v in value)
    return False


def encode(message: dict[str, Any]) -> bytes:
    try:
        return (_encode(message) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (say, in an echoed id): escape it, as JSON may
        return (_encode_ascii(message) + "\n").encode("ascii")


def decode_request(line: bytes) -> dict[str, Any]:
    """The request on one line. RequestError: EBADMSG if it is no JSON object; EINVAL if it
    holds NaN or an infinity (answered under its id, unless the id is what holds one)."""
    try:
        text = line.decode("utf-8")
        request = _decode(text)
    except _NotFinite:
        marked = _decode_marking(text)
        request_id = marked.get("id") if isinstance(marked, dict) else None
        raise RequestError(errno.EINVAL, "NaN and infinite numbers are not JSON: refused",
                           None if _holds_marked(request_id) else request_id) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise RequestError(errno.EBADMSG, f"request is not a JSON object on one line: {exc}") from None
    if not isinstance(request, dict):
        raise RequestError(errno.EBADMSG, "request must be a JSON object")
    return request


def error_reply(request_id: Any, exc: KernelError) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "errno": exc.errno_name, "error": exc.message}


class LineReader:
    """Splits what a connection receives into request lines, in time linear in the bytes
    received however they are cut (a line dribbled 16 bytes at a time is joined once).

    ``feed`` returns the complete lines; a line over ``MAX_LINE`` bytes comes back as None, once,
    and the rest of it, up to its newline, is dropped.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max = max_line
        self._parts: list[bytes] = []  # the unfinished line, as received
        self._size = 0
        self._discarding = False       # inside an over-long line, dropping bytes up to its newline

    def feed(self, data: bytes) -> list[Optional[bytes]]:
        if b"\n" not in data:  # a piece of a line: kept, not joined yet
            if self._discarding:
                return []
            self._parts.append(data)
            self._size += len(data)
            return self._overflow()
        lines: list[Optional[bytes]] = list(data.split(b"\n"))  # only the new bytes are split
        rest = lines.pop()
        if self._discarding:
            self._discarding = False
            del lines[0]  # the end of the over-long line
        elif self._parts:
            lines[0] = b"".join([*self._parts, lines[0]])  # type: ignore[list-item]
        if lines and max(map(len, lines)) > self._max:  # type: ignore[arg-type]
            lines = [line if len(line) <= self._max else None for line in lines]  # type: ignore[arg-type]
        self._parts, self._size = ([rest], len(rest)) if rest else ([], 0)
        return lines + self._overflow()

    def _overflow(self) -> list[Optional[bytes]]:
        """Past ``max_line`` bytes without a newline: report the line (once) and drop the rest."""
        if self._size <= self._max:
            return []
        self._parts, self._size, self._discarding = [], 0, True
        return [None]
