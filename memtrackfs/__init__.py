"""memtrackfs: the Linux media memory-tracking files (v4l2-memtrack, rk_dmabuf, dma-buf), on FUSE."""

__version__ = "0.1.0"
