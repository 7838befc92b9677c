"""Which process is which, from /proc: a thread's thread group, a process's identity, and
whether it still runs (a pid is reused after its process is reaped; its start time is not).
"""
from __future__ import annotations

from typing import Optional

from memtrackfs.model.files import ProcessId


def _stat_fields(pid: int) -> Optional[list[str]]:
    """/proc/PID/stat from field 3 (state) on; None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields follow the last ')'.
    return text[text.rfind(b")") + 2:].decode().split()


def thread_group(tid: int) -> int:
    """The tgid of thread ``tid`` (what FUSE's context gives), as ``current->tgid``; ``tid`` itself
    if it is gone."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return tid


def comm(pid: int) -> Optional[str]:
    """The command name of ``pid`` (/proc/PID/comm, at most 15 bytes); None if there is no such
    process. Bytes that are not UTF-8 read as U+FFFD, as a terminal would show them."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().decode("utf-8", errors="replace").rstrip("\n")
    except OSError:
        return None


def state(pid: int) -> Optional[str]:
    """The state code of ``pid`` as ps shows it (R, S, D, T, t, Z...); None if there is no such process."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def identify(tgid: int) -> Optional[ProcessId]:
    """The running process ``tgid``; None if it has exited (a zombie has: its files are closed)."""
    fields = _stat_fields(tgid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return ProcessId(tgid, int(fields[19]))


def is_running(process: Optional[ProcessId]) -> bool:
    return process is not None and identify(process.tgid) == process
