"""Reading /dev/kmsg as ``dmesg`` does: every record there is now, without waiting for more.

The kernel's device blocks at the newest record unless opened with O_NONBLOCK, where it answers
EAGAIN; a reader that fell behind the ring gets EPIPE once and goes on from the oldest record.
"""
from __future__ import annotations

import errno
import os
from typing import NamedTuple

READ_SIZE = 8192  # the kernel refuses a read() smaller than the next record with EINVAL


class KmsgRecord(NamedTuple):
    level: int
    seq: int
    usec: int
    message: str


def read_kmsg_lines(path: str) -> list[str]:
    """Every record of the log at ``path``, one line each (``level,seq,usec,-;message``)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    lines: list[str] = []
    try:
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # records were overwritten under us: the next read goes on
                raise
            if not data:
                break
            lines.extend(data.decode("utf-8", errors="replace").splitlines())
    finally:
        os.close(fd)
    return lines


def parse_kmsg_line(line: str) -> KmsgRecord:
    """``level,seq,usec,flags[,...];message``; ValueError if it is not a record."""
    prefix, sep, message = line.partition(";")
    fields = prefix.split(",")
    if not sep or len(fields) < 4:
        raise ValueError(f"not a /dev/kmsg record: {line!r}")
    return KmsgRecord(int(fields[0]) & 7, int(fields[1]), int(fields[2]), message)


def read_kmsg(path: str) -> list[KmsgRecord]:
    # Lines starting with a space continue the record before (its dictionary: SUBSYSTEM=...).
    return [parse_kmsg_line(line) for line in read_kmsg_lines(path) if line and not line.startswith(" ")]
