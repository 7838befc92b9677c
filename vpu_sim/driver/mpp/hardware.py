"""The RK3588 codec cores' timing: how long a task keeps a core busy, and each core's load.

Speeds are Rockchip's headline figures for RK3588 (decoding 8K@60 across the two RKVDEC2 cores,
encoding 8K@30 across the two RKVENC2 cores), scaled by the task's frame-buffer bytes against an
8K frame's: a 1080p frame takes about a sixteenth of an 8K one. The ccu hands a task to the core
that is free first. ``load`` reports each core's busy share of the last interval, which
mpp_service's ``load`` file shows (load and utilization alike: the simulation has no queueing
apart from the cores).
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from memtrackfs.model.boards import rk3588

FRAME_8K_BYTES = 61710336   # an 8K HEVC frame buffer (vpu_sim.apps.mpp.sizes)
CORE_FPS_8K = {"decoder": 30.0, "encoder": 15.0}
CORES = {"decoder": (rk3588.DECODER, rk3588.DECODER_CORE1), "encoder": (rk3588.ENCODER, rk3588.ENCODER_CORE1)}


class Hardware:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._free_at = {core: 0.0 for cores in CORES.values() for core in cores}
        self._busy: dict[str, list[tuple[float, float]]] = {core: [] for core in self._free_at}

    def run(self, kind: str, frame_bytes: int) -> float:
        """Start a task on the first free core of ``kind``; when it will be done."""
        seconds = frame_bytes / (FRAME_8K_BYTES * CORE_FPS_8K[kind])
        with self._lock:
            now = self.clock()
            core = min(CORES[kind], key=lambda c: self._free_at[c])
            start = max(now, self._free_at[core])
            self._free_at[core] = done = start + seconds
            self._busy[core].append((start, done))
        return done

    def load(self, interval: float) -> dict[str, int]:
        """Each core's busy share of the last ``interval`` seconds, in hundredths of a percent."""
        with self._lock:
            now = self.clock()
            since = now - interval
            shares = {}
            for core, spans in self._busy.items():
                spans[:] = [(a, b) for a, b in spans if b > since]
                busy = sum(min(b, now) - max(a, since) for a, b in spans if a < now)
                shares[core] = min(10000, max(0, round(busy / interval * 10000)))
            return shares
