"""Renderers of the upstream dma-buf views: debugfs ``dma_buf/bufinfo`` (dma_buf_debug_show()) and
sysfs ``kernel/dmabuf/buffers/<ino>/{exporter_name,size}`` (dma-buf-sysfs-stats.c).
"""
from __future__ import annotations

from memtrackfs.model.dmabuf import DmaBuf, DmaBufTable


def render_dma_buf_bufinfo(table: DmaBufTable) -> bytes:
    """dma_buf_debug_show(): every buffer, newest first: size, file flags and mode, references,
    exporter, inode, name, and its attached devices."""
    out = ["\nDma-buf Objects:\n",
           "%-8s\t%-8s\t%-8s\t%-8s\texp_name\t%-8s\tname\n" % ("size", "flags", "mode", "count", "ino")]
    count = size = 0
    for buf in table.newest_first():
        out.append("%08d\t%08x\t%08x\t%08d\t%s\t%08d\t%s\n" % (
            buf.size, buf.file_flags, buf.file_mode, buf.refs, buf.exporter, buf.ino,
            buf.name if buf.name is not None else "<none>"))
        out.append("\tAttached Devices:\n")
        out.extend(f"\t{a.device}\n" for a in buf.newest_attachments())
        out.append(f"Total {len(buf.attachments)} devices attached\n\n")
        count += 1
        size += buf.size
    out.append(f"\nTotal {count} objects, {size} bytes\n")
    return "".join(out).encode("utf-8")


def render_dma_buf_exporter_name(buf: DmaBuf) -> bytes:
    """exporter_name_show(): ``"%s\\n"`` of the exporter's name."""
    return f"{buf.exporter}\n".encode("utf-8")


def render_dma_buf_size(buf: DmaBuf) -> bytes:
    """size_show(): ``"%zu\\n"`` of the size in bytes."""
    return f"{buf.size}\n".encode("ascii")
