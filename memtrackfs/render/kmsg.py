"""Renderer of ``dev/kmsg`` records: ``"%u,%llu,%llu,-;%s\\n"`` as devkmsg_read() prints them."""
from __future__ import annotations

from memtrackfs.model.kmsg import LogRecord


def _escape(message: str) -> str:
    """printk's ext format escapes control bytes, bytes >= 127 and the backslash as \\xNN."""
    raw = message.encode("utf-8")
    if raw.isascii() and raw.isprintable() and b"\\" not in raw:
        return message
    return "".join(chr(b) if 32 <= b < 127 and b != 0x5C else f"\\x{b:02x}" for b in raw)


def render_kmsg_record(record: LogRecord) -> bytes:
    return f"{record.level},{record.seq},{record.usec},-;{_escape(record.message)}\n".encode("ascii")
