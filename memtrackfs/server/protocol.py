"""Wire format of the driver socket: one JSON object per line, each way.

Request: ``{"id": ANY, "op": NAME, ...fields}``; reply: ``{"id": ANY, "ok": true, ...results}`` or
``{"id": ANY, "ok": false, "errno": "EINVAL", "error": "sentence"}``. Events the server pushes
on its own carry ``"event"`` instead of ``"ok"``.
"""
from __future__ import annotations

import errno
import json
from typing import Any

from memtrackfs.errors import KernelError

PROTOCOL_VERSION = 1
MAX_LINE = 1 << 20  # a longer request is answered E2BIG and discarded; the connection lives on

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.JSONDecoder().decode


def encode(message: dict[str, Any]) -> bytes:
    try:
        return (_encode(message) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (say, in an echoed id): escape it, as JSON may
        return (_encode_ascii(message) + "\n").encode("ascii")


def decode_request(line: bytes) -> dict[str, Any]:
    try:
        request = _decode(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise KernelError(errno.EBADMSG, f"request is not a JSON object on one line: {exc}") from None
    if not isinstance(request, dict):
        raise KernelError(errno.EBADMSG, "request must be a JSON object")
    return request


def error_reply(request_id: Any, exc: KernelError) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "errno": exc.errno_name, "error": exc.message}
