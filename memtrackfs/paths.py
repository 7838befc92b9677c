"""Where the kernel files are, relative to a root: ``/`` on a board, the mount point here.

The one definition of each path for everything that reads the files as a user would (the tools,
the test helpers, vpu-sim's scenarios); ``fs/tree.py`` lays the mount out the same way.
"""
from __future__ import annotations

MEMTRACK_DIR = "sys/kernel/debug/v4l2-memtrack"
DYNAMIC_DEBUG_CONTROL = "sys/kernel/debug/dynamic_debug/control"
DMA_BUF_BUFINFO = "sys/kernel/debug/dma_buf/bufinfo"
DMABUF_SYSFS_BUFFERS = "sys/kernel/dmabuf/buffers"
RK_DMABUF_DIR = "proc/rk_dmabuf"
RK_DMABUF_SIZE = f"{RK_DMABUF_DIR}/size"
RK_DMABUF_PEAK = f"{RK_DMABUF_DIR}/peak"
RK_DMABUF_DEV = f"{RK_DMABUF_DIR}/dev"
RK_DMABUF_SGT = f"{RK_DMABUF_DIR}/sgt"
RK_DMA_HEAP_DIR = "proc/rk_dma_heap"
RK_DMA_HEAP_BITMAP = f"{RK_DMA_HEAP_DIR}/alloc_bitmap"
RK_DMA_HEAP_INFO = f"{RK_DMA_HEAP_DIR}/dma_heap_info"
RK_DMA_HEAP_INFO_DEBUGFS = "sys/kernel/debug/rk_dma_heap/dma_heap_info"  # the same show, at 0444
RK_TOTAL_POOLS_KB = "sys/kernel/rk_dma_heap/rk_total_pools_kb"
MPP_SERVICE_DIR = "proc/mpp_service"
MPP_SESSIONS_SUMMARY = f"{MPP_SERVICE_DIR}/sessions-summary"
MPP_LOAD = f"{MPP_SERVICE_DIR}/load"
DEV_DIR = "dev"
KMSG = "dev/kmsg"
