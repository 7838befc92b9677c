"""The default profile: every file memtrackfs emulates at once, as the mount has always had them.

It is no real board: the Amphion VPU's v4l2-memtrack tree beside Rockchip's rk_dmabuf views, so
that one mount serves every tool. Heaps: ``system`` and a 256 MiB ``cma`` (DEFAULT_HEAPS).
"""
from memtrackfs.model.boards import MEMTRACK, RK_DMABUF, RK_HEAP_BITMAP, Board
from memtrackfs.model.heaps import DEFAULT_HEAPS

UNION = Board(
    name="union",
    title="every emulated file (no real board)",
    files=frozenset({MEMTRACK, RK_DMABUF, RK_HEAP_BITMAP}),
    heaps=DEFAULT_HEAPS,
    display="display-subsystem",
    vpu="amphion",
)
