"""An open file of dev/mpp_service: one MPP session, its ioctl messages decoded and answered as
drivers/video/rockchip/mpp/mpp_common.c does (mpp_collect_msgs(), mpp_process_request(),
mpp_process_task(), mpp_wait_result()).

One ioctl reads ``struct mpp_msg_v1`` after ``struct mpp_msg_v1`` up to the last one. Queries,
init and control commands act at once; register writes, reads, offsets and RCB infos are
collected into a task, which runs once the messages are read: its registers' fds are imported
into the session (through memtrackfs, which attaches and maps them for the device) and a codec
core starts on it; a poll waits for the session's oldest task and copies the read registers
back. What the simulation leaves out: the register values mean nothing to it beyond the
format and the fds, and a poll returns the registers as written.
"""
from __future__ import annotations

import ctypes
import errno
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from memtrackfs.driverkit import UserMemory
from memtrackfs.errors import KernelError
from memtrackfs.model.boards import MppBoard
from vpu_sim import mpp_uapi as abi
from vpu_sim.driver.mpp.hardware import Hardware

_MSG = ctypes.sizeof(abi.mpp_msg_v1)
_ELEM = ctypes.sizeof(abi.reg_offset_elem)
MAX_TRANS_TABLE = abi.MPP_MAX_REG_TRANS_NUM  # u16 trans_table[] of a session


class ServiceCalls(Protocol):
    """The kernel's side of sessions (memtrackfs's mpp_* socket operations)."""

    def init(self, session: int, client_type: int) -> dict[str, Any]: ...

    def import_buffers(self, session: int, inodes: list[int]) -> list[dict[str, int]]: ...

    def release_fd(self, session: int, inode: int) -> None: ...

    def reset(self, session: int) -> None: ...

    def codec_info(self, session: int, items: list[list[int]]) -> None: ...


def _u32(data: bytes) -> int:
    return int.from_bytes(data[:4].ljust(4, b"\0"), "little")


@dataclass
class _Task:
    regs: list[int]
    reads: list[tuple[int, int, int]] = field(default_factory=list)  # (offset, size, user address)
    done_at: float = 0.0


class MppFile:
    def __init__(self, session: int, calls: ServiceCalls, board: MppBoard, hardware: Hardware,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.calls = calls
        self.board = board
        self.hardware = hardware
        self.clock = clock
        self.device_type = -1
        self.trans_table: tuple[int, ...] = ()
        self._lock = threading.Lock()          # the session's task lists
        self._pending: list[_Task] = []

    # -- the ioctl ---------------------------------------------------------------------------

    def ioctl(self, cmd: int, arg: int, user: UserMemory) -> None:
        if cmd != abi.MPP_IOC_CFG_V1:
            raise KernelError(errno.EINVAL, f"unknown mpp ioctl {cmd:#x}")
        task: _Task | None = None
        polls = 0
        flags = 0
        for index in range(abi.MPP_MAX_MSG_NUM + 1):
            if index == abi.MPP_MAX_MSG_NUM:
                raise KernelError(errno.EINVAL, f"more than {abi.MPP_MAX_MSG_NUM} messages in one request")
            msg = abi.mpp_msg_v1.from_buffer_copy(user.read(arg + index * _MSG, _MSG))
            flags |= msg.flags
            if msg.cmd in (abi.SET_REG_WRITE, abi.SET_REG_READ, abi.SET_REG_ADDR_OFFSET, abi.SET_RCB_INFO):
                task = task or self._new_task()
                self._collect(task, msg, user)
            elif msg.cmd in (abi.POLL_HW_FINISH, abi.POLL_HW_IRQ):
                polls += 1
            else:
                self._request(msg, user)
            if not msg.flags & abi.FLAGS_MULTI_MSG or msg.flags & abi.FLAGS_LAST_MSG:
                break
        if task is not None:
            self._start(task, flags)
        if polls:
            self._wait(user)

    def _request(self, msg: abi.mpp_msg_v1, user: UserMemory) -> None:
        """mpp_process_request(): the commands that act at once."""
        cmd, data = msg.cmd, msg.data_ptr
        if cmd == abi.QUERY_HW_SUPPORT:
            support = sum(1 << d.type for d in self.board.devices)
            user.write(data, support.to_bytes(4, "little"))
        elif cmd == abi.QUERY_HW_ID:
            device_type = self.device_type if self.device_type >= 0 else _u32(user.read(data, 4))
            device = self.board.device(device_type)
            if device is None:
                raise KernelError(errno.EINVAL, f"no mpp device of type {device_type}")
            user.write(data, device.hw_id.to_bytes(4, "little"))
        elif cmd == abi.QUERY_CMD_SUPPORT:
            asked = _u32(user.read(data, 4))
            user.write(data, abi.COMMAND_GROUPS.get(asked & ~0xFF, 0).to_bytes(4, "little"))
        elif cmd == abi.INIT_CLIENT_TYPE:
            client_type = _u32(user.read(data, 4))
            self.calls.init(self.session, client_type)
            self.device_type = client_type
        elif cmd == abi.INIT_DRIVER_DATA:
            self._require_device()
        elif cmd == abi.INIT_TRANS_TABLE:
            if msg.size > 2 * MAX_TRANS_TABLE:
                raise KernelError(errno.ENOMEM, f"a translation table holds at most {MAX_TRANS_TABLE} entries")
            raw = user.read(data, msg.size) if msg.size else b""
            self.trans_table = tuple(int.from_bytes(raw[i:i + 2], "little") for i in range(0, len(raw) - 1, 2))
        elif cmd == abi.SET_SESSION_FD:
            pass  # batch mode: the tasks are this file's anyway
        elif cmd == abi.RESET_SESSION:
            self.calls.reset(self.session)
        elif cmd in (abi.TRANS_FD_TO_IOVA, abi.RELEASE_FD):
            fds = self._fd_array(msg, user)
            if cmd == abi.RELEASE_FD:
                for fd in fds:
                    self.calls.release_fd(self.session, fd)
            else:
                mapped = self.calls.import_buffers(self.session, fds)
                user.write(data, b"".join((m["iova"] & 0xFFFFFFFF).to_bytes(4, "little") for m in mapped))
        elif cmd == abi.SEND_CODEC_INFO:
            count = min(msg.size // ctypes.sizeof(abi.codec_info_elem), abi.ENC_INFO_PROFILE + 1)
            raw = user.read(data, count * ctypes.sizeof(abi.codec_info_elem)) if count else b""
            elems = [abi.codec_info_elem.from_buffer_copy(raw, i * 16) for i in range(count)]
            self.calls.codec_info(self.session, [[e.type, e.flag, e.data] for e in elems])
        else:
            raise KernelError(errno.EFAULT, f"unknown mpp command {cmd:#x}")  # as mpp_process_request() answers

    def _fd_array(self, msg: abi.mpp_msg_v1, user: UserMemory) -> list[int]:
        if not msg.size or msg.size > 4 * abi.MPP_MAX_REG_TRANS_NUM:
            raise KernelError(errno.EINVAL, f"an fd list of {msg.size} bytes")
        raw = user.read(msg.data_ptr, msg.size)
        return [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw) - 3, 4)]

    def _require_device(self) -> None:
        if self.device_type < 0:
            raise KernelError(errno.EINVAL, "the session has no client type (MPP_CMD_INIT_CLIENT_TYPE first)")

    # -- tasks -------------------------------------------------------------------------------

    @property
    def _decoder(self) -> bool:
        return self.device_type == abi.DEVICE_RKVDEC

    def _new_task(self) -> _Task:
        self._require_device()
        words = abi.DEC_REG_NUM if self._decoder else abi.ENC_REG_BYTES // 4
        return _Task([0] * words)

    def _collect(self, task: _Task, msg: abi.mpp_msg_v1, user: UserMemory) -> None:
        """rkvdec2_extract_task_msg(): an empty message, or one mpp_check_req() finds outside the
        register file, is skipped (the simulation skips one that runs past the end too)."""
        limit = 4 * len(task.regs)
        if not msg.size or msg.offset % 4 or msg.offset + msg.size > limit:
            return
        if msg.cmd == abi.SET_REG_WRITE:
            raw = user.read(msg.data_ptr, msg.size)
            first = msg.offset // 4
            for i in range(msg.size // 4):
                task.regs[first + i] = int.from_bytes(raw[4 * i:4 * i + 4], "little")
        elif msg.cmd == abi.SET_REG_READ:
            task.reads.append((msg.offset, msg.size, msg.data_ptr))
        elif msg.size > _ELEM * abi.MPP_MAX_REG_TRANS_NUM:
            raise KernelError(errno.EINVAL, f"more than {abi.MPP_MAX_REG_TRANS_NUM} offset or rcb entries")
        # SET_REG_ADDR_OFFSET and SET_RCB_INFO change IOVAs the simulated hardware never uses.

    def _start(self, task: _Task, flags: int) -> None:
        """mpp_process_task(): translate the fds, hand the task to a core. Only the RKVDEC2 and
        RKVENC2 cores are simulated: another device's task completes at once, importing nothing."""
        if self.device_type not in (abi.DEVICE_RKVDEC, abi.DEVICE_RKVENC):
            task.done_at = self.clock()
            with self._lock:
                self._pending.append(task)
            return
        if self._decoder:
            fmt = task.regs[abi.DEC_REG_FORMAT] & 0x3FF
            table = self.trans_table or abi.DEC_TRANS.get(fmt)
        else:
            fmt = task.regs[abi.ENC_REG_FORMAT] & 1
            table = self.trans_table or abi.ENC_TRANS
        if table is None:
            raise KernelError(errno.EINVAL, f"unknown decoder format {fmt}")
        fds: list[int] = []
        if not flags & abi.FLAGS_REG_FD_NO_TRANS:
            for index in table:
                value = task.regs[index] if index < len(task.regs) else 0
                fd = value if flags & abi.FLAGS_REG_NO_OFFSET else value & 0x3FF
                if fd:
                    fds.append(fd)
        mapped = self.calls.import_buffers(self.session, fds) if fds else []
        sizes = dict(zip(dict.fromkeys(fds), (m["size"] for m in mapped)))
        output = task.regs[abi.DEC_REG_DECOUT if self._decoder else abi.ENC_REG_SRC[0]]
        task.done_at = self.hardware.run("decoder" if self._decoder else "encoder", sizes.get(output, 0))
        with self._lock:
            self._pending.append(task)

    def _wait(self, user: UserMemory) -> None:
        """mpp_wait_result(): the oldest task of the session, done; its read registers copied back."""
        with self._lock:
            if not self._pending:
                raise KernelError(errno.EIO, "the session has no task to wait for")
            task = self._pending.pop(0)
        delay = task.done_at - self.clock()
        if delay > 0:
            time.sleep(delay)
        for offset, size, address in task.reads:
            first = offset // 4
            words = task.regs[first:first + size // 4]
            user.write(address, b"".join(w.to_bytes(4, "little") for w in words))
