"""The VPU device: the tracker root with its cores' carve-outs, the instance slots per core, and
each video node's priority state.

Probe creates ``amphion-vpu`` with an ``fw`` and an ``rpc`` leaf per core (reserved memory:
tracked, never taken from a heap). Each open() makes an instance; its first STREAMON takes a
firmware slot on the least busy core of its kind (``vpu_inst_register()``), and when every core
of that kind runs ``max_instances`` streams that STREAMON fails with EINVAL, as on Linux 6.1.
"""
from __future__ import annotations

import errno
import threading
import time

from memtrackfs.errors import KernelError
from vpu_sim import uapi
from vpu_sim.driver.accounting import Memory
from vpu_sim.driver.amphion import model as amphion
from vpu_sim.driver.amphion.decoder import Decoder
from vpu_sim.driver.amphion.encoder import Encoder
from vpu_sim.driver.amphion.faults import NO_FAULTS, Faults
from vpu_sim.driver.amphion.instance import DEFAULT_FPS, Clock, Instance
from vpu_sim.driver.amphion.model import Core, CoreKind
from vpu_sim.driver.memtrack import Caller

INSTANCE_TYPES: dict[CoreKind, type[Instance]] = {CoreKind.DECODER: Decoder, CoreKind.ENCODER: Encoder}


class VpuDevice:
    def __init__(self, memory: Memory, board: str = "imx8qxp", *, caller: Caller = Caller(0, 0),
                 clock: Clock = time.monotonic, fps: float = DEFAULT_FPS, faults: Faults = NO_FAULTS) -> None:
        self.memory = memory
        self.cores = amphion.board_cores(board)
        self.clock = clock
        self.fps = fps
        self.faults = faults
        memtrack = memory.memtrack
        self.root = memtrack.create_root(amphion.TRACKER_ROOT, caller)
        for core in self.cores:
            memtrack.add(self.root, core.fw_bytes, amphion.LEAF_FW, caller)
            memtrack.add(self.root, core.rpc_bytes, amphion.LEAF_RPC, caller)
        self.instances: dict[Core, list[Instance]] = {core: [] for core in self.cores}  # streaming ones
        self.opened: list[Instance] = []
        self.priorities = {kind: Priorities() for kind in CoreKind}
        self._lock = threading.Lock()  # open() and release() of different files race

    def open(self, kind: CoreKind, caller: Caller) -> Instance:
        """open() of the decoder or encoder node by ``caller``: a new instance."""
        instance = INSTANCE_TYPES[kind](self.memory, self.root, caller, clock=self.clock, fps=self.fps,
                                        faults=self.faults, firmware=self)
        with self._lock:
            self.opened.append(instance)
        return instance

    def register(self, instance: Instance) -> None:
        with self._lock:
            cores = [core for core in self.cores if core.kind is instance.kind]
            core = min(cores, key=lambda c: len(self.instances[c]))
            if len(self.instances[core]) >= core.max_instances:
                raise KernelError(errno.EINVAL, f"all {len(cores) * core.max_instances} {instance.kind.value} "
                                                f"firmware instances are streaming")
            self.instances[core].append(instance)

    def unregister(self, instance: Instance) -> None:
        with self._lock:
            for instances in self.instances.values():
                if instance in instances:
                    instances.remove(instance)

    def release(self, instance: Instance) -> None:
        """release() of an open file: free the instance (and its slot)."""
        with self._lock:
            if instance in self.opened:
                self.opened.remove(instance)
        instance.close()

    def remove(self) -> None:
        """Driver unbind: close what is still open, drop the carve-outs and the root.

        Instances a ``driver-leak`` left behind go with the root, in the RFC's leak report.
        """
        for instance in list(self.opened):
            self.release(instance)
        memtrack = self.memory.memtrack
        for core in self.cores:
            memtrack.sub(self.root, core.fw_bytes, amphion.LEAF_FW)
            memtrack.sub(self.root, core.rpc_bytes, amphion.LEAF_RPC)
        memtrack.destroy(self.root)


class Priorities:
    """A video node's v4l2_prio_state: how many open files hold each priority."""

    def __init__(self) -> None:
        self._counts = [0] * 4
        self._lock = threading.Lock()

    def open(self) -> int:
        with self._lock:
            self._counts[uapi.V4L2_PRIORITY_DEFAULT] += 1
        return uapi.V4L2_PRIORITY_DEFAULT

    def close(self, local: int) -> None:
        with self._lock:
            self._counts[local] -= 1

    def maximum(self) -> int:
        """v4l2_prio_max()."""
        with self._lock:
            return next((prio for prio in (3, 2, 1) if self._counts[prio]), uapi.V4L2_PRIORITY_UNSET)

    def check(self, local: int) -> None:
        """v4l2_prio_check(): a file below the highest priority may not change the device."""
        if local < self.maximum():
            raise KernelError(errno.EBUSY, "another open file of this device holds a higher priority")

    def change(self, local: int, new: int) -> int:
        """v4l2_prio_change(): the file's new priority (1..3, else EINVAL)."""
        if new not in (uapi.V4L2_PRIORITY_BACKGROUND, uapi.V4L2_PRIORITY_INTERACTIVE, uapi.V4L2_PRIORITY_RECORD):
            raise KernelError(errno.EINVAL, f"priority {new} is not 1, 2 or 3")
        with self._lock:
            self._counts[new] += 1
            self._counts[local] -= 1
        return new
