"""The VPU device: the tracker root with its cores' carve-outs, and the instance slots per core.

Probe creates ``amphion-vpu`` with an ``fw`` and an ``rpc`` leaf per core (reserved memory:
tracked, never taken from a heap). Each open() takes a slot on the least busy core of its kind;
when every core of that kind runs ``max_instances`` instances, open() fails with EBUSY.
"""
from __future__ import annotations

import errno
import threading
import time

from memtrackfs.errors import KernelError
from vpu_sim.driver import amphion
from vpu_sim.driver.accounting import Memory
from vpu_sim.driver.amphion import Core, CoreKind
from vpu_sim.driver.decoder import Decoder
from vpu_sim.driver.encoder import Encoder
from vpu_sim.driver.faults import NO_FAULTS, Faults
from vpu_sim.driver.instance import DEFAULT_FPS, Clock, Instance
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
        self.instances: dict[Core, list[Instance]] = {core: [] for core in self.cores}
        self._lock = threading.Lock()  # open() and release() of different files race

    def open(self, kind: CoreKind, caller: Caller) -> Instance:
        """open() of the decoder or encoder node by ``caller``: a new instance, or EBUSY."""
        with self._lock:
            cores = [core for core in self.cores if core.kind is kind]
            core = min(cores, key=lambda c: len(self.instances[c]))
            if len(self.instances[core]) >= core.max_instances:
                raise KernelError(errno.EBUSY, f"all {len(cores) * core.max_instances} {kind.value} instances "
                                               f"are in use")
            instance = INSTANCE_TYPES[kind](self.memory, self.root, caller, clock=self.clock, fps=self.fps,
                                            faults=self.faults)
            self.instances[core].append(instance)
            return instance

    def release(self, instance: Instance) -> None:
        """release() of an open file: free the instance and its slot."""
        with self._lock:
            for instances in self.instances.values():
                if instance in instances:
                    instances.remove(instance)
        instance.close()

    def remove(self) -> None:
        """Driver unbind: close what is still open, drop the carve-outs and the root.

        Instances a ``driver-leak`` left behind go with the root, in the RFC's leak report.
        """
        for instances in self.instances.values():
            for instance in list(instances):
                self.release(instance)
        memtrack = self.memory.memtrack
        for core in self.cores:
            memtrack.sub(self.root, core.fw_bytes, amphion.LEAF_FW)
            memtrack.sub(self.root, core.rpc_bytes, amphion.LEAF_RPC)
        memtrack.destroy(self.root)
