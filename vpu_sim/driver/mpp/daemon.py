"""``vpu-sim daemon --board rk3588``: Rockchip's mpp_service driver, serving ``dev/mpp_service``.

It connects as a driver whose state goes with it (``destroy_on_close``), registers the node and
serves each open file as an MPP session (``vpu_sim.driver.mpp.file.MppFile``): open tells
memtrackfs the session's thread (``current->pid``) and process, release ends it; the session's
bookkeeping (device, index, imported buffers) lives in memtrackfs's model, which the
``/proc/mpp_service`` files show. Every second it reports the codec cores' load.
"""
from __future__ import annotations

import errno
import threading
from typing import Any

from memtrackfs.client import MemtrackClient, MemtrackError
from memtrackfs.driverkit import Call, DeviceDriver
from memtrackfs.model.boards import board
from vpu_sim.boards import MPP_NODES
from vpu_sim.driver.mpp.file import MppFile
from vpu_sim.driver.mpp.hardware import Hardware

LOAD_PERIOD = 1.0  # seconds between load reports


class SocketCalls:
    """memtrackfs's mpp_* operations for ``MppFile``."""

    def __init__(self, client: MemtrackClient) -> None:
        self.client = client

    def init(self, session: int, client_type: int) -> dict[str, Any]:
        return self.client.call("mpp_session_init", session=session, client_type=client_type)

    def import_buffers(self, session: int, inodes: list[int]) -> list[dict[str, int]]:
        return self.client.call("mpp_import", session=session, buffers=inodes)["buffers"]

    def release_fd(self, session: int, inode: int) -> None:
        self.client.call("mpp_release_fd", session=session, buffer=inode)

    def reset(self, session: int) -> None:
        self.client.call("mpp_reset", session=session)

    def codec_info(self, session: int, items: list[list[int]]) -> None:
        self.client.call("mpp_codec_info", session=session, items=items)


class MppDaemon(DeviceDriver):
    name = "vpu_sim mpp_service"
    program = "vpu-sim"

    def __init__(self, socket_path: str) -> None:
        super().__init__(socket_path)
        profile = board("rk3588", self.client.server.get("bsp") or None)
        assert profile.mpp is not None
        self.board = profile.mpp
        self.hardware = Hardware()
        self.calls = SocketCalls(self.client)
        self.files: dict[int, MppFile] = {}
        self._stop = threading.Event()
        for name in MPP_NODES:
            self.register(name)
        self.log(6, "mpp_service mpp-srv: " + self.board.version)
        self.log(6, "mpp_service mpp-srv: probe success")
        threading.Thread(target=self._report_load, name="mpp-load", daemon=True).start()

    def open(self, call: Call) -> bytes:
        session = self.client.call("mpp_session_open", pid=call.pid, tgid=call.tgid)["session"]
        self.files[call.file] = MppFile(session, self.calls, self.board, self.hardware)
        return b""

    def ioctl(self, call: Call) -> bytes:
        mpp = self.files.get(call.file)
        if mpp is None:
            raise OSError(errno.EBADF, "unknown file")
        mpp.ioctl(call.event["cmd"], call.event["arg"], call.memory)
        return b""  # MPP_IOC_CFG_V1 is _IOW: nothing goes back through the argument

    def release(self, call: Call) -> bytes:
        mpp = self.files.pop(call.file, None)
        if mpp is not None:
            self.client.call("mpp_session_close", session=mpp.session)
        return b""

    def _report_load(self) -> None:
        while not self._stop.wait(LOAD_PERIOD):
            try:
                for core, share in self.hardware.load(LOAD_PERIOD).items():
                    self.client.call("mpp_load", device=core, load=share, utilization=share)
            except (MemtrackError, ConnectionError):
                return

    def shutdown(self) -> None:
        self._stop.set()
        self.close()  # its sessions and their buffers go with the connection
