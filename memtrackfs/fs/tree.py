"""The mount's tree: every emulated path, mirroring the real ones under the mount point."""
from __future__ import annotations

import errno
from typing import Optional

from memtrackfs.errors import KernelError
from memtrackfs.fs.entries import Directory, Entry, GeneratedFile, KmsgFile
from memtrackfs.kernel import Kernel
from memtrackfs.model.tracker import Node
from memtrackfs.render.dynamic_debug import apply_dynamic_debug_query, render_dynamic_debug_control
from memtrackfs.render.memtrack import render_memtrack


def _memtrack_file(root: Node) -> GeneratedFile:
    def render() -> bytes:
        if not root.alive:
            # debugfs: reading a file whose owner removed it fails with EIO.
            raise KernelError(errno.EIO, "tracker root was destroyed")
        return render_memtrack(root)
    return GeneratedFile(render)


def build_tree(kernel: Kernel) -> Directory:
    tracker, log = kernel.tracker, kernel.log

    def memtrack_lookup(name: str) -> Optional[Entry]:
        root = tracker.roots.get(name)
        return None if root is None else _memtrack_file(root)

    debug = Directory({
        "v4l2-memtrack": Directory(mode=0o755, lookup=memtrack_lookup, names=lambda: list(tracker.roots)),
        "dynamic_debug": Directory({
            "control": GeneratedFile(lambda: render_dynamic_debug_control(log.sites),
                                     lambda data: apply_dynamic_debug_query(log.sites, data)),
        }, mode=0o755),
    }, mode=0o700)  # debugfs is root-only on a real board
    return Directory({
        "dev": Directory({"kmsg": KmsgFile()}, mode=0o755),
        "proc": Directory(),
        "sys": Directory({"kernel": Directory({"debug": debug}, mode=0o755)}, mode=0o755),
    }, mode=0o755)
