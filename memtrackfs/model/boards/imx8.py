"""NXP i.MX8QXP and i.MX8QM with the Amphion VPU: v4l2-memtrack and the upstream dma-buf views,
no Rockchip file.

Heaps: ``system`` and the default CMA area, which the CMA heap names after its reserved-memory
node, ``linux,cma``: 0x3c000000 bytes (960 MiB) in NXP's imx8qxp-mek.dts (nxp-imx/linux-imx,
``reserved-memory { linux,cma { size = <0 0x3c000000>; linux,cma-default; }; }``). The i.MX8QM
profile uses the same size: its MEK's CMA node was not found in the sources read.
"""
from memtrackfs.model.boards import MEMTRACK, Board
from memtrackfs.model.heaps import DEFAULT_SYSTEM_CAPACITY, HeapSpec, MiB

_HEAPS = (HeapSpec("system", DEFAULT_SYSTEM_CAPACITY), HeapSpec("linux,cma", 960 * MiB))

IMX8QXP = Board(name="imx8qxp", title="NXP i.MX8QXP (Amphion VPU)", files=frozenset({MEMTRACK}),
                heaps=_HEAPS, display="display-subsystem", vpu="amphion")
IMX8QM = Board(name="imx8qm", title="NXP i.MX8QM (Amphion VPU)", files=frozenset({MEMTRACK}),
               heaps=_HEAPS, display="display-subsystem", vpu="amphion")
