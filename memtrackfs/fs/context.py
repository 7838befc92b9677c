"""Who is calling: the process behind the FUSE request being served on this thread."""
from __future__ import annotations

from memtrackfs.fs.fuselib import load_fuse_module
from memtrackfs.processes import thread_group

fuse = load_fuse_module()


def caller() -> tuple[int, int]:
    """(tgid, pid) of the calling thread, as ``current`` has them (FUSE gives the thread id)."""
    pid = fuse.fuse_get_context()[2]
    return thread_group(pid), pid


def caller_tgid() -> int:
    return caller()[0]
