"""Client programs that use the VPU's nodes as any V4L2 application does, and dma-buf helpers."""
