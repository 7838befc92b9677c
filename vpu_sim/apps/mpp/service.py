"""dev/mpp_service as Rockchip's MPP user library drives it (osal/driver/mpp_service.c): probe
the capabilities on a short-lived open, then one open per codec session, INIT_CLIENT_TYPE, and
per frame a batch of register messages followed by a poll.

Nothing here knows it talks to a simulation, except that the "fds" written into registers are
dma-buf inode numbers (see ``vpu_sim.mpp_uapi``).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from typing import Optional, Sequence

from vpu_sim import mpp_uapi as abi

Payload = Optional[ctypes._SimpleCData | ctypes.Array]  # what data_ptr points to (the caller keeps it alive)


def _array(ctype: type, values: Sequence[object]) -> ctypes.Array:
    return (ctype * max(1, len(values)))(*values)


class MppServiceDevice:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "MppServiceDevice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, messages: Sequence[tuple[int, int, Payload, int]]) -> None:
        """One MPP_IOC_CFG_V1 of (cmd, flags, payload, offset) messages; as mpp_service_cmd_send()
        flags them: MULTI on each of several, LAST and REG_OFFSET_ALONE on the last."""
        msgs = (abi.mpp_msg_v1 * len(messages))()
        for msg, (cmd, flags, payload, offset) in zip(msgs, messages):
            msg.cmd, msg.flags, msg.offset = cmd, flags, offset
            if payload is not None:
                msg.size, msg.data_ptr = ctypes.sizeof(payload), ctypes.addressof(payload)
            if len(messages) > 1:
                msg.flags |= abi.FLAGS_MULTI_MSG
        msgs[-1].flags |= abi.FLAGS_LAST_MSG | abi.FLAGS_REG_NO_OFFSET
        try:
            fcntl.ioctl(self.fd, abi.MPP_IOC_CFG_V1, msgs)
        except OSError as exc:
            raise OSError(exc.errno, f"MPP_IOC_CFG_V1: {exc.strerror}") from None

    def query(self, cmd: int, value: int = 0) -> int:
        word = ctypes.c_uint32(value)
        self.request([(cmd, 0, word, 0)])  # type: ignore[list-item]
        return word.value

    def init_client(self, client_type: int) -> None:
        self.query(abi.INIT_CLIENT_TYPE, client_type)

    def send_task(self, regs: ctypes.Array, writes: Sequence[tuple[int, int]], reads: Sequence[tuple[int, int]],
                  offsets: Sequence[tuple[int, int]], rcb: Sequence[tuple[int, int]] = ()) -> None:
        """SET_REG_WRITE of each (first register, count), SET_REG_READ of each read range (into
        ``regs`` at poll), SET_REG_ADDR_OFFSET and SET_RCB_INFO: one task."""
        keep: list[ctypes.Array] = []
        messages: list[tuple[int, int, Payload, int]] = []
        for cmd, ranges in ((abi.SET_REG_WRITE, writes), (abi.SET_REG_READ, reads)):
            for first, count in ranges:
                view = (ctypes.c_uint32 * count).from_buffer(regs, 4 * first)
                keep.append(view)
                messages.append((cmd, 0, view, 4 * first))
        if offsets:
            table = _array(abi.reg_offset_elem, [abi.reg_offset_elem(r, o) for r, o in offsets])
            messages.append((abi.SET_REG_ADDR_OFFSET, abi.FLAGS_REG_NO_OFFSET, table, 0))
        if rcb:
            messages.append((abi.SET_RCB_INFO, 0, _array(abi.rcb_info_elem, [abi.rcb_info_elem(r, s) for r, s in rcb]), 0))
        self.request(messages)

    def poll(self) -> None:
        """POLL_HW_FINISH: wait for the oldest task; its read registers come back."""
        self.request([(abi.POLL_HW_FINISH, 0, None, 0)])

    def codec_info(self, items: Sequence[tuple[int, int, int]]) -> None:
        self.request([(abi.SEND_CODEC_INFO, 0, _array(abi.codec_info_elem, [abi.codec_info_elem(*i) for i in items]), 0)])


def probe(path: str, client_type: int) -> int:
    """check_mpp_service_cap() on its own open: the supported devices, each command group's end,
    the device's hardware id. Returns the hardware id (MPP picks its HAL by it)."""
    with MppServiceDevice(path) as dev:
        supported = dev.query(abi.QUERY_HW_SUPPORT)
        if not supported & (1 << client_type):
            raise OSError(errno.ENODEV, f"{path}: no mpp device of client type {client_type}")
        for group in abi.COMMAND_GROUPS:
            dev.query(abi.QUERY_CMD_SUPPORT, group)
        return dev.query(abi.QUERY_HW_ID, client_type)
