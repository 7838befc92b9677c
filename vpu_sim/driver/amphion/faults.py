"""Driver-side faults: what the simulated driver or its firmware gets wrong, on purpose.

``vpu-sim daemon --fault KIND[:KEY=VALUE,...]`` (repeatable, each kind once; list values joined
by '+') builds one ``Faults``, which the driver consults at the few points where such a bug shows:

- ``driver-leak:names=mbi+dcp``: ``Instance.close`` forgets to free the named internal buffers,
  and, since the instance's tracker node still holds memory, leaves that node in place too
  (the early return of a release path that bails out). The buffers stay allocated in CMA and in
  the tree, owned by a process that has gone, until the driver is removed: then the RFC's leak
  report for ``amphion-vpu`` lists them in dev/kmsg (with dynamic debug enabled).
- ``slow-firmware:frame_ms=N[,at=S][,seconds=D]``: each frame takes N ms (``Instance.advance``).
- ``stuck-firmware[:at=S][,seconds=D]``: no frame completes (forever without ``seconds``);
  a blocked DQBUF then fails with ETIMEDOUT when memtrackfs's ``--driver-timeout`` expires.
- ``resolution-storm:every_ms=N,sizes=WxH+WxH[,at=S][,seconds=D]``: every N ms the streams
  announce the next size of the list (``Decoder._prepare_frame``): MBI/DCP are freed and
  reallocated and the application must restart its CAPTURE queue (the LAST buffer).

``at`` and ``seconds`` count from the driver's probe (``origin``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Sequence

from vpu_sim import params
from vpu_sim.driver.amphion import model as amphion
from vpu_sim.params import Field

# The internal buffers a release path can forget: the decoder's and the encoder's named leaves.
LEAKABLE = (amphion.LEAF_RING, amphion.LEAF_UDATA, amphion.LEAF_MBI, amphion.LEAF_DCP,
            amphion.LEAF_ENC_FRAME, amphion.LEAF_REF_FRAME)


def _leak_names(value: object) -> tuple[str, ...]:
    names = params.words(value)
    unknown = [name for name in names if name not in LEAKABLE]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is no internal buffer; choose from {', '.join(LEAKABLE)}")
    return names


def _decoder_sizes(value: object) -> tuple[tuple[int, int], ...]:
    found = params.sizes(value)
    (min_w, min_h), (max_w, max_h) = amphion.DEC_MIN_SIZE, amphion.DEC_MAX_SIZE
    for width, height in found:
        if not (min_w <= width <= max_w and min_h <= height <= max_h):
            raise ValueError(f"{width}x{height} is outside the decoder's {min_w}x{min_h}..{max_w}x{max_h}")
    return found


_WINDOW = {"at": Field(params.seconds, default=0.0), "seconds": Field(params.seconds, default=math.inf)}
SCHEMAS: dict[str, dict[str, Field]] = {
    "driver-leak": {"names": Field(_leak_names, required=True)},
    "slow-firmware": {"frame_ms": Field(params.positive, required=True), **_WINDOW},
    "stuck-firmware": dict(_WINDOW),
    "resolution-storm": {"every_ms": Field(params.positive, required=True),
                         "sizes": Field(_decoder_sizes, required=True), **_WINDOW},
}


@dataclass(frozen=True)
class FaultSpec:
    """One validated fault; ``str()`` gives its ``--fault`` form, which parses back to it."""
    kind: str
    values: Mapping[str, Any]

    def shifted(self, seconds: float) -> "FaultSpec":
        """The same fault starting ``seconds`` later (a scenario's timeline starts after the probe)."""
        if "at" not in self.values:
            return self
        return FaultSpec(self.kind, {**self.values, "at": self.values["at"] + seconds})

    def __str__(self) -> str:
        given = [f"{key}={_format(value)}" for key, value in self.values.items()
                 if value != SCHEMAS[self.kind][key].default]
        return self.kind + (":" + ",".join(given) if given else "")


def _format(value: Any) -> str:
    if isinstance(value, tuple):
        return "+".join(f"{item[0]}x{item[1]}" if isinstance(item, tuple) else str(item) for item in value)
    if isinstance(value, float):
        text = repr(value)  # the shortest text that parses back to the same number
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def fault_spec(kind: str, raw: Mapping[str, object]) -> FaultSpec:
    """Validate a fault's parameters (strings from the command line or TOML values)."""
    if kind not in SCHEMAS:
        raise ValueError(f"unknown driver fault {kind!r}; driver faults: {', '.join(SCHEMAS)}")
    return FaultSpec(kind, params.check(raw, SCHEMAS[kind], kind))


def parse_fault(text: str) -> FaultSpec:
    """``KIND[:KEY=VALUE,...]`` as given to ``--fault``."""
    kind, _, rest = text.partition(":")
    raw: dict[str, object] = {}
    for item in filter(None, rest.split(",")):
        key, equals, value = item.partition("=")
        if not equals:
            raise ValueError(f"{kind}: {item!r} is not KEY=VALUE")
        raw[key] = value
    return fault_spec(kind, raw)


@dataclass(frozen=True)
class Window:
    at: float = 0.0
    seconds: float = math.inf

    def contains(self, t: float) -> bool:
        return self.at <= t < self.at + self.seconds


@dataclass(frozen=True)
class Faults:
    """The faults a driver runs with; ``origin`` is the clock time ``at`` counts from."""
    origin: float = 0.0
    specs: tuple[FaultSpec, ...] = ()
    leaked: frozenset[str] = frozenset()
    slow: Optional[tuple[Window, float]] = None                       # window, seconds per frame
    stuck: Optional[Window] = None
    storm: Optional[tuple[Window, float, tuple[tuple[int, int], ...]]] = None  # window, period, sizes

    @classmethod
    def build(cls, specs: Sequence[FaultSpec], origin: float) -> "Faults":
        kinds = [spec.kind for spec in specs]
        repeated = {kind for kind in kinds if kinds.count(kind) > 1}
        if repeated:
            raise ValueError(f"fault {sorted(repeated)[0]!r} given more than once")
        faults = cls(origin=origin, specs=tuple(specs))
        for spec in specs:
            v = spec.values
            window = Window(v.get("at", 0.0), v.get("seconds", math.inf))
            if spec.kind == "driver-leak":
                faults = replace(faults, leaked=frozenset(v["names"]))
            elif spec.kind == "slow-firmware":
                faults = replace(faults, slow=(window, v["frame_ms"] / 1000))
            elif spec.kind == "stuck-firmware":
                faults = replace(faults, stuck=window)
            else:
                faults = replace(faults, storm=(window, v["every_ms"] / 1000, v["sizes"]))
        return faults

    def leaks(self, name: str) -> bool:
        """Does release forget the internal buffers called ``name``?"""
        return name in self.leaked

    def frame_period(self, period: float, t: float) -> float:
        """How long the frame starting at clock time ``t`` takes (``period`` when healthy)."""
        if self.slow is not None and self.slow[0].contains(t - self.origin):
            return self.slow[1]
        return period

    def completion(self, t: float) -> float:
        """When a frame due at clock time ``t`` really completes: a stuck firmware holds it until
        it recovers (``inf``: never)."""
        if self.stuck is not None and self.stuck.contains(t - self.origin):
            return self.origin + self.stuck.at + self.stuck.seconds
        return t

    def stream_size(self, t: float) -> Optional[tuple[int, int]]:
        """The size a resolution storm gives the streams at clock time ``t`` (None: their own).

        The first period of the storm keeps the stream's size; then each period takes the
        next size of the list, cycling.
        """
        if self.storm is None:
            return None
        window, every, sizes = self.storm
        if not window.contains(t - self.origin):
            return None
        period = int((t - self.origin - window.at) // every)
        return sizes[(period - 1) % len(sizes)] if period > 0 else None


NO_FAULTS = Faults()
