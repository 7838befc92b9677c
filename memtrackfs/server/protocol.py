"""Wire format of the driver socket: one JSON object per line, each way.

Request: ``{"id": ANY, "op": NAME, ...fields}``; reply: ``{"id": ANY, "ok": true, ...results}`` or
``{"id": ANY, "ok": false, "errno": "EINVAL", "error": "sentence"}``. Events the server pushes
on its own carry ``"event"`` instead of ``"ok"``.
"""
from __future__ import annotations

import errno
import json
import math
import threading
from typing import Any, Optional

from memtrackfs.errors import KernelError

PROTOCOL_VERSION = 1
MAX_LINE = 1 << 20  # a longer request is answered E2BIG and discarded; the connection lives on

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class NotFinite:
    """What NaN, Infinity and out-of-range floats (1e400) decode to: JSON cannot say them, so no
    reply could echo them. A request holding one is refused (``decode_request``)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text
        _parsing.not_finite += 1

    def __repr__(self) -> str:
        return self.text


_parsing = threading.local()  # .not_finite: how many NotFinite the current decode made


def _float(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else NotFinite(text)


_decode = json.JSONDecoder(parse_constant=NotFinite, parse_float=_float).decode


class RequestError(KernelError):
    """A request refused as a whole, answered under ``request_id`` (None: it had no usable id)."""

    def __init__(self, code: int, message: str, request_id: Any = None) -> None:
        super().__init__(code, message)
        self.request_id = request_id


def _holds_not_finite(value: Any) -> bool:
    if isinstance(value, NotFinite):
        return True
    if isinstance(value, dict):
        return any(_holds_not_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_not_finite(v) for v in value)
    return False


def encode(message: dict[str, Any]) -> bytes:
    try:
        return (_encode(message) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (say, in an echoed id): escape it, as JSON may
        return (_encode_ascii(message) + "\n").encode("ascii")


def decode_request(line: bytes) -> dict[str, Any]:
    """The request on one line. RequestError: EBADMSG if it is no JSON object; EINVAL if it
    holds NaN or an infinity (answered under its id, unless the id is what holds one)."""
    _parsing.not_finite = 0
    try:
        request = _decode(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise RequestError(errno.EBADMSG, f"request is not a JSON object on one line: {exc}") from None
    if not isinstance(request, dict):
        raise RequestError(errno.EBADMSG, "request must be a JSON object")
    if _parsing.not_finite:
        request_id = request.get("id")
        raise RequestError(errno.EINVAL, "NaN and infinite numbers are not JSON: refused",
                           None if _holds_not_finite(request_id) else request_id)
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
        lines: list[Optional[bytes]] = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            piece = data[start:end]
            start = end + 1
            if self._discarding:
                self._discarding = False  # the end of the over-long line
                continue
            if self._parts:
                self._parts.append(piece)
                piece = b"".join(self._parts)
                self._parts, self._size = [], 0
            lines.append(piece if len(piece) <= self._max else None)
        if start < len(data) and not self._discarding:
            self._parts.append(data[start:])
            self._size += len(data) - start
            if self._size > self._max:
                self._parts, self._size, self._discarding = [], 0, True
                lines.append(None)
        return lines
