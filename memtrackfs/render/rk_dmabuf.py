"""Renderers of Rockchip's ``proc/rk_dmabuf/{size,peak,dev,sgt}`` (rk_dmabuf_procfs.c), and the
``peak`` write handler. Formatted on bytes, so ``%-16.16s`` truncates as C does: by bytes.
"""
from __future__ import annotations

import errno
from typing import Optional

from memtrackfs.errors import KernelError
from memtrackfs.model.dmabuf import DmaBuf, DmaBufTable

_HEADER = b"%16s %-16s %-16s %14s %8s\n\n"
_PREFIX_WIDTH = 65  # the width of _buffer_prefix(), which later segment lines pad with spaces


def _text(value: Optional[str]) -> bytes:
    # The kernel's %s prints a NULL pointer as "(null)".
    return b"(null)" if value is None else value.encode("utf-8")


def _buffer_prefix(buf: DmaBuf) -> bytes:
    """``"%px %-16.16s %-16.16s %10lu KiB"``: pointer, name, exporter, size in KiB."""
    return b"%016x %-16.16s %-16.16s %10d KiB" % (buf.address, _text(buf.name), _text(buf.exporter), buf.size >> 10)


def render_rk_dmabuf_size(table: DmaBufTable) -> bytes:
    """rk_dmabuf_size_show(): ``"Total: %lu KiB\\n"`` of every live dma-buf's size."""
    return b"Total: %d KiB\n" % (table.total >> 10)


def render_rk_dmabuf_peak(table: DmaBufTable) -> bytes:
    """rk_dmabuf_peak_show(): ``"Peak: %lu MiB\\n"`` of the high-water mark."""
    return b"Peak: %d MiB\n" % (table.peak >> 20)


def parse_rk_dmabuf_peak_write(data: bytes) -> None:
    """rk_dmabuf_peak_write(): only the first byte counts; '0' (the one write it takes) resets
    the peak to 0, anything else is EINVAL. The caller resets (``DmaBufTable.reset_peak``)."""
    if data[:1] != b"0":
        raise KernelError(errno.EINVAL, "only a write starting with '0' resets the peak")


def render_rk_dmabuf_dev(table: DmaBufTable) -> bytes:
    """rk_dmabuf_dev_show() (rk_dmabuf_cb3() per buffer): every buffer, newest first, with the
    devices attached to it, newest first."""
    out = [_HEADER % (b"DMABUF", b"NAME", b"EXPORT", b"SIZE:KiB", b"AttachedDevices")]
    for buf in table.newest_first():
        devices = b"".join(b" " + _text(a.device) for a in buf.newest_attachments())
        out.append(_buffer_prefix(buf) + devices + b"\n")
    return b"".join(out)


def render_rk_dmabuf_sgt(table: DmaBufTable) -> bytes:
    """rk_dmabuf_dump_sgt(): for each buffer, the scatter list of its newest attachment that holds
    one (``attach->sgt``, kept only by exporters that cache their mappings: Rockchip's CMA heap,
    DRM PRIME); buffers with none print nothing (CONFIG_RK_DMABUF_DEBUG_ADVANCED, which would map
    them for the dump, is off in Rockchip's defconfigs)."""
    out = [_HEADER % (b"DMABUF", b"NAME", b"EXPORT", b"SIZE:KiB", b"SGLIST")]
    for buf in table.newest_first():
        sgt = next((a.sgt for a in buf.newest_attachments() if a.sgt is not None), None)
        for i, (address, length) in enumerate(sgt or ()):
            out.append(_buffer_prefix(buf) if i == 0 else b" " * _PREFIX_WIDTH)
            # "%4d: %pa..%pa (%10lu %s)": KiB from 1024 bytes up, else bytes.
            amount, unit = (length >> 10, b"KiB") if length >> 10 else (length, b"Bytes")
            out.append(b"%4d: 0x%016x..0x%016x (%10d %s)\n" % (i, address, address + length - 1, amount, unit))
    return b"".join(out)
