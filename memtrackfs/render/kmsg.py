"""``dev/kmsg``: records as devkmsg_read() prints them (``"%u,%llu,%llu,-;%s\\n"``, the first field
``facility << 3 | level``: msg_print_ext_header()), and the records devkmsg_write() makes of what
userspace writes (kernel/printk/printk.c; docs/spec/emulated-files.md)."""
from __future__ import annotations

import errno
import re

from memtrackfs.errors import KernelError
from memtrackfs.model.kmsg import FACILITY_USER, LEVEL_WARNING, LogRecord

# printk's ext format escapes control bytes, bytes >= 127 and the backslash as \xNN.
_NEEDS_ESCAPE = re.compile(rb"[^\x20-\x5b\x5d-\x7e]")
# PRINTKRB_RECORD_MAX (kernel/printk/internal.h): devkmsg_write() refuses longer writes (EINVAL).
KMSG_WRITE_MAX = 1024
# default_message_loglevel: CONFIG_MESSAGE_LOGLEVEL_DEFAULT, 4 in every defconfig.
DEFAULT_WRITE_LEVEL = LEVEL_WARNING
_PREFIX = re.compile(rb"<([0-9]*)>")


def _escape(message: str) -> str:
    raw = message.encode("utf-8", "surrogateescape")
    return _NEEDS_ESCAPE.sub(lambda m: b"\\x%02x" % m.group()[0], raw).decode("ascii")


def render_kmsg_record(record: LogRecord) -> bytes:
    """devkmsg_read(): one record, msg_print_ext_header() then the escaped text and a newline."""
    prefix = record.facility << 3 | record.level
    return f"{prefix},{record.seq},{record.usec},-;{_escape(record.message)}\n".encode("ascii")


def parse_kmsg_write(data: bytes) -> tuple[int, int, str]:
    """(facility, level, message) of one write(2) to /dev/kmsg, as devkmsg_write() reads it: an
    optional ``<N>`` prefix (simple_strtoul's digits, possibly none, then ``>``) gives the level
    (N & 7) and, if LOG_FACILITY(N) = N >> 3 & 0xff is not 0, the facility; otherwise level 4, facility LOG_USER. One write
    is one record, up to a NUL byte; printk_sprint() drops one trailing newline. EINVAL past
    KMSG_WRITE_MAX."""
    if len(data) > KMSG_WRITE_MAX:
        raise KernelError(errno.EINVAL, f"a record is at most {KMSG_WRITE_MAX} bytes")
    facility, level = FACILITY_USER, DEFAULT_WRITE_LEVEL
    prefix = _PREFIX.match(data)
    if prefix:
        number = int(prefix.group(1) or b"0") & 0xFFFFFFFF  # the kernel keeps it in an unsigned int
        level = number & 7
        facility = number >> 3 & 0xFF or facility  # LOG_FACILITY(): 8 bits
        data = data[prefix.end():]
    data = data.split(b"\0", 1)[0]  # devkmsg_emit(facility, level, "%s", line): a C string
    if data.endswith(b"\n"):
        data = data[:-1]
    return facility, level, data.decode("utf-8", "surrogateescape")
