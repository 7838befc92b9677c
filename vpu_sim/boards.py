"""Which vpu_sim driver serves which board, and the device nodes it registers.

The board profiles themselves (files, heaps, device names) are memtrackfs's
(``memtrackfs.model.boards``); a mount tells its board in the socket's greeting.
"""
from __future__ import annotations

from memtrackfs.model.boards import board

MPP_NODES = ("mpp_service",)
DRIVER_BOARDS = ("imx8qxp", "imx8qm", "rk3588")   # what `vpu-sim daemon --board` takes


def driver_of(board_name: str) -> str:
    """"amphion" or "mpp": the simulated driver a board's VPU needs."""
    return board(board_name).vpu


def node_names(board_name: str) -> tuple[str, ...]:
    """The dev/ nodes the board's driver registers, once it is ready."""
    if driver_of(board_name) == "mpp":
        return MPP_NODES
    from vpu_sim.driver.amphion.daemon import MEDIA_NODE, NODE_NAMES
    return (*NODE_NAMES.values(), MEDIA_NODE)
