"""An instance's allocations: taken from a backing, then recorded in the tracker, freed in reverse.

Every byte the simulated driver holds goes through here, so the tracker and the backing never
disagree: an allocation that fails on either side leaves both as they were.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from vpu_sim.driver.memtrack import Allocation, Backing, Caller, Handle, MemTrack


@dataclass(frozen=True)
class Held:
    """One allocation the driver holds: ``nbytes`` on tracker ``node`` (as leaf ``name``) and its memory."""
    node: Handle
    nbytes: int
    name: Optional[str]
    allocation: Allocation


@dataclass
class Memory:
    memtrack: MemTrack
    coherent: Backing      # dma_alloc_coherent(): rings, udata, mbi, dcp, encoder frames (CMA)
    planes: Backing        # vb2's allocator: CMA for dma-contig, system memory for dma-sg/vmalloc

    def _allocate(self, backing: Backing, node: Handle, nbytes: int, name: Optional[str],
                  caller: Caller) -> Held:
        allocation = backing.allocate(nbytes)
        try:
            self.memtrack.add(node, nbytes, name, caller)
        except BaseException:
            allocation.release()
            raise
        return Held(node, nbytes, name, allocation)

    def alloc_leaf(self, node: Handle, name: str, nbytes: int, caller: Caller) -> Held:
        return self._allocate(self.coherent, node, nbytes, name, caller)

    def alloc_planes(self, node: Handle, sizes: Sequence[int], caller: Caller) -> tuple[Held, ...]:
        """One unnamed add per plane on a queue node (vb2 MMAP); all planes or none."""
        done: list[Held] = []
        try:
            for nbytes in sizes:
                done.append(self._allocate(self.planes, node, nbytes, None, caller))
        except BaseException:
            self.free(done)
            raise
        return tuple(done)

    def free(self, held: Iterable[Held]) -> None:
        for item in held:
            self.memtrack.sub(item.node, item.nbytes, item.name)
            item.allocation.release()


@dataclass
class LeafSet:
    """The driver's buffers of one name under the instance node: the ring, udata, mbi, dcp, ...

    The firmware asks for a count of equal buffers; ``ensure`` frees them all when the size
    changes (a resolution change) and allocates the missing ones.
    """
    memory: Memory
    node: Handle
    name: str
    held: list[Held] = field(default_factory=list)

    def ensure(self, count: int, nbytes: int, caller: Caller, *, partial: bool = False) -> bool:
        """Hold ``count`` buffers of ``nbytes``. ENOMEM raises, or with ``partial`` keeps what
        was allocated and returns False (the firmware's request stays pending)."""
        if any(item.nbytes != nbytes for item in self.held) or len(self.held) > count:
            self.free_all()
        while len(self.held) < count:
            try:
                self.held.append(self.memory.alloc_leaf(self.node, self.name, nbytes, caller))
            except OSError as exc:
                if partial and exc.errno == errno.ENOMEM:
                    return False
                raise
        return True

    def free_all(self) -> None:
        while self.held:
            self.memory.free([self.held.pop()])
