"""Renderer of ``dev/kmsg`` records: ``"%u,%llu,%llu,-;%s\\n"`` as devkmsg_read() prints them."""
from __future__ import annotations

import re

from memtrackfs.model.kmsg import LogRecord

# printk's ext format escapes control bytes, bytes >= 127 and the backslash as \xNN.
_NEEDS_ESCAPE = re.compile(rb"[^\x20-\x5b\x5d-\x7e]")


def _escape(message: str) -> str:
    raw = message.encode("utf-8")
    return _NEEDS_ESCAPE.sub(lambda m: b"\\x%02x" % m.group()[0], raw).decode("ascii")


def render_kmsg_record(record: LogRecord) -> bytes:
    return f"{record.level},{record.seq},{record.usec},-;{_escape(record.message)}\n".encode("ascii")
