"""A real board's files, written where the tools read them (``ROOT=DIR``, ``--mount DIR``), with
names the RFC prints as it gets them (memtrackfs refuses them at its socket): a node named
"fw [leaf]" with a child, one named "x (tgid=666, pid=666)" holding 64 MiB, a leaf named
"usage: 9", an instance named "  b", roots named "x [leaf]" and "a\\nb", and dma-buf names cut by
``%-16.16s`` inside a UTF-8 character. Each line is ``v4l2_memtrack_seq_show``'s format.
"""
from __future__ import annotations

from pathlib import Path

MEMTRACK = "sys/kernel/debug/v4l2-memtrack"
X_BYTES = 64 << 20


def amphion_tree(x_bytes: int = X_BYTES, b_bytes: int = 4096) -> str:
    instance = 4096 + x_bytes + 36868
    total = b_bytes + 33554432 + instance
    return (f"Total memory usage: {total} bytes\n"
            f"amphion-vpu (tgid=1000, pid=1000) usage: {total}\n"
            f"    b (tgid=3003, pid=3003) usage: {b_bytes} (count=2)\n"
            "  fw [leaf] (tgid=1000, pid=1000) usage: 33554432\n"
            f"  instance (tgid=2001, pid=2001) usage: {instance}\n"
            "    fw [leaf] (tgid=2001, pid=2001) usage: 4096\n"
            "      mbi [leaf] (tgid=2001, pid=2001) usage: 4096\n"
            f"    x (tgid=666, pid=666) (tgid=2001, pid=2001) usage: {x_bytes} (count=2)\n"
            "    usage: 9 [leaf] (tgid=2001, pid=2001) usage: 36868\n")


def _rk_line(address: int, name: bytes, exporter: bytes, kib: int, devices: bytes = b"") -> bytes:
    return b"%016x %-16.16s %-16.16s %10d KiB%s\n" % (address, name, exporter, kib, devices)


def write_board(root: Path) -> None:
    """The files of a board under ``root`` (its sys/ and proc/)."""
    memtrack = root / MEMTRACK
    memtrack.mkdir(parents=True, exist_ok=True)
    (memtrack / "amphion-vpu").write_text(amphion_tree())
    (memtrack / "x [leaf]").write_text("Total memory usage: 0 bytes\nx [leaf] (tgid=7, pid=7) usage: 0\n")
    (memtrack / "a\nb").write_text("Total memory usage: 5 bytes\na\nb (tgid=7, pid=7) usage: 5\n")
    rk = root / "proc/rk_dmabuf"
    rk.mkdir(parents=True, exist_ok=True)
    (rk / "size").write_text("Total: 12 KiB\n")
    (rk / "peak").write_text("Peak: 0 MiB\n")
    header = b"%16s %-16s %-16s %14s %8s\n\n" % (b"DMABUF", b"NAME", b"EXPORT", b"SIZE:KiB", b"AttachedDevices")
    (rk / "dev").write_bytes(header
                             + _rk_line(0xFFFFFF8100003000, "aéééééééé".encode(), b"system", 4, b" vop")
                             + _rk_line(0xFFFFFF8100002000, b"2001-player", "sÿstème-heap-çà".encode(), 4)
                             + _rk_line(0xFFFFFF8100001000, b"(null)", b"system", 4))
