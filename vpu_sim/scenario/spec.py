"""Scenario files (TOML, described in docs/scenarios.md): a driver with faults, and a timeline.

``load`` reads and checks a file completely before anything runs, so a typo fails at once
with the file, the entry and the key named. Faults split into the driver's (passed to
``vpu-sim daemon --fault``, see ``vpu_sim.driver.amphion.faults``) and those the scenario itself applies:
``keep-dmabufs`` and ``crash`` change how an application runs, ``cma-exhaustion`` is a third
party filling the CMA heap (``vpu_sim.apps.hog``).
"""
from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from vpu_sim import params
from vpu_sim.apps.mpp.sizes import CODECS as MPP_CODECS
from vpu_sim.apps.mpp.sizes import ENC_CODECS as MPP_ENC_CODECS
from vpu_sim.apps.v4l2 import CODECS
from vpu_sim.boards import DRIVER_BOARDS, driver_of
from vpu_sim.driver.amphion.daemon import ALLOCATORS
from vpu_sim.driver.amphion.faults import SCHEMAS as DRIVER_FAULTS
from vpu_sim.driver.amphion.faults import Faults, FaultSpec, fault_spec
from vpu_sim.params import Field

APP_KINDS = ("play", "encode", "transcode", "compositor")

TOP = {
    "name": Field(params.text),
    "description": Field(params.text),
    "board": Field(params.choice(DRIVER_BOARDS), default="imx8qxp"),
    "fps": Field(params.positive, default=30.0),
    "allocator": Field(params.choice(ALLOCATORS), default="dma-contig"),
    # The driver idles this long before the first application and after the last, so that a
    # tool sampling the totals (scripts/leakwatch.sh) sees it idle at both ends.
    "settle": Field(params.seconds, default=1.0),
    "app": Field(params.tables, required=True),
    "fault": Field(params.tables, default=[]),
}
APP = {
    "name": Field(params.text),
    "kind": Field(params.choice(APP_KINDS), required=True),
    "codec": Field(params.choice(tuple(dict.fromkeys([*CODECS, *MPP_CODECS])))),
    "size": Field(params.size, default=(1920, 1080)),
    "start": Field(params.seconds, default=0.0),
    "seconds": Field(params.positive, required=True),
    "count": Field(params.count, default=1),
    "export_to": Field(params.text),
    "playlist": Field(params.count, default=1),
}
APP_FAULTS: dict[str, dict[str, Field]] = {
    "keep-dmabufs": {"app": Field(params.text, required=True), "hold": Field(params.positive, default=30.0)},
    "crash": {"app": Field(params.text, required=True), "at": Field(params.seconds, required=True)},
    "cma-exhaustion": {"at": Field(params.seconds, default=0.0), "seconds": Field(params.positive, required=True),
                       "heap": Field(params.text)},
}


@dataclass(frozen=True)
class App:
    """One application process of the timeline (an ``[[app]]`` entry with ``count`` makes several)."""
    name: str
    kind: str
    codec: str
    size: tuple[int, int]
    start: float
    seconds: float
    board: str = "imx8qxp"
    export_to: Optional[str] = None
    playlist: int = 1
    keep_exports: Optional[float] = None   # keep-dmabufs: seconds a helper keeps the exports
    crash_at: Optional[float] = None       # crash: SIGKILL at this time of the timeline

    @property
    def mpp(self) -> bool:
        return driver_of(self.board) == "mpp"

    @property
    def what(self) -> str:
        if self.kind == "compositor":
            return "compositor home screen"
        width, height = self.size
        shows_codec = self.kind != "encode" or self.mpp
        return f"{self.kind} {width}x{height}" + (f" {self.codec}" if shows_codec else "")

    def command(self, mount: str) -> list[str]:
        if self.kind == "compositor":
            return [sys.executable, "-m", "vpu_sim", "compositor", "--mount", mount, "--seconds", repr(self.seconds)]
        width, height = self.size
        command = [sys.executable, "-m", "vpu_sim", self.kind, "--mount", mount, "--json",
                   "--size", f"{width}x{height}", "--seconds", repr(self.seconds)]
        if self.mpp:
            command += ["--board", self.board]
        if self.kind != "encode" or self.mpp:
            command += ["--codec", self.codec]
        if self.export_to is not None:
            command += ["--export-to", self.export_to]
        if self.playlist != 1:
            command += ["--playlist", str(self.playlist)]
        if self.keep_exports is not None:
            command += ["--keep-exports", repr(self.keep_exports)]
        return command


@dataclass(frozen=True)
class CmaExhaustion:
    at: float
    seconds: float
    heap: Optional[str]   # None: the mount's first CMA heap


@dataclass(frozen=True)
class Scenario:
    name: str
    description: Optional[str]
    board: str
    fps: float
    allocator: str
    settle: float
    apps: tuple[App, ...]
    driver_faults: tuple[FaultSpec, ...]
    cma_exhaustion: Optional[CmaExhaustion]

    def daemon_args(self) -> list[str]:
        """``vpu-sim daemon`` options; fault times move by ``settle``, as the timeline starts
        that long after the probe, from which the daemon counts."""
        if driver_of(self.board) == "mpp":
            return ["--board", self.board]
        args = ["--board", self.board, "--fps", repr(self.fps), "--allocator", self.allocator]
        for spec in self.driver_faults:
            args += ["--fault", str(spec.shifted(self.settle))]
        return args

    @property
    def length(self) -> float:
        """Seconds the scenario takes when nothing cuts it short: its timeline between two idle
        ``settle`` periods (applications may run a little longer than asked)."""
        ends = [app.start + app.seconds for app in self.apps]
        ends += [app.crash_at for app in self.apps if app.crash_at is not None]
        if self.cma_exhaustion is not None:
            ends.append(self.cma_exhaustion.at + self.cma_exhaustion.seconds)
        return 2 * self.settle + max(ends)

    @property
    def fault_names(self) -> list[str]:
        names = [str(spec) for spec in self.driver_faults]
        names += ["keep-dmabufs"] * any(app.keep_exports is not None for app in self.apps)
        names += ["crash"] * any(app.crash_at is not None for app in self.apps)
        names += ["cma-exhaustion"] * (self.cma_exhaustion is not None)
        return names


def _check_codec(entry: dict[str, Any], board: str, label: str) -> None:
    """The codecs each board's applications take (its driver's), and where none is taken."""
    kind, codec = entry["kind"], entry["codec"]
    mpp = driver_of(board) == "mpp"
    if kind == "compositor" or (kind == "encode" and not mpp):
        if codec is not None:
            what = "a compositor decodes nothing" if kind == "compositor" else "an encode always produces h264"
            raise ValueError(f"{label}: codec: {what}; leave codec out")
        return
    if kind == "transcode" and mpp:
        raise ValueError(f"{label}: kind: transcode runs on the Amphion boards, not {board}")
    allowed = (MPP_ENC_CODECS if kind == "encode" else MPP_CODECS) if mpp else tuple(CODECS)
    if codec is not None and codec not in allowed:
        raise ValueError(f"{label}: codec: {board}'s {kind} takes {', '.join(allowed)}, not {codec!r}")


def _app_entries(raw: list[dict[str, Any]], where: str, board: str) -> list[dict[str, Any]]:
    entries = []
    kinds = [entry.get("kind") for entry in raw]
    for index, table in enumerate(raw, 1):
        entry = params.check(table, APP, f"{where}: app {index}")
        label = f"{where}: app {index}"
        _check_codec(entry, board, label)
        if entry["export_to"] is not None and entry["kind"] != "play":
            raise ValueError(f"{label}: export_to: only play exports its frames")
        if entry["playlist"] != 1 and (entry["kind"] != "play" or driver_of(board) != "mpp"):
            raise ValueError(f"{label}: playlist: only an rk3588 play plays several videos")
        entry["codec"] = entry["codec"] or "h264"
        entry["board"] = board
        if entry["name"] is None:
            # The kind names the entry, numbered when several entries share it.
            same = [i for i, kind in enumerate(kinds, 1) if kind == entry["kind"]]
            entry["name"] = entry["kind"] + (str(same.index(index) + 1) if len(same) > 1 else "")
        entries.append(entry)
    names = [entry["name"] for entry in entries]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{where}: two apps are named {repeated[0]!r}; app names must be unique")
    return entries


def _apply_app_fault(kind: str, values: dict[str, Any], entries: list[dict[str, Any]], label: str) -> None:
    targets = [entry for entry in entries if entry["name"] == values["app"]]
    if not targets:
        raise ValueError(f"{label}: app: no app is named {values['app']!r} "
                         f"(apps: {', '.join(entry['name'] for entry in entries)})")
    target = targets[0]
    key = "keep_exports" if kind == "keep-dmabufs" else "crash_at"
    if target.get(key) is not None:
        raise ValueError(f"{label}: app {values['app']!r} already has a {kind} fault")
    if kind == "keep-dmabufs":
        if target["export_to"] is None:
            raise ValueError(f"{label}: app {values['app']!r} exports nothing: give it export_to")
        target["keep_exports"] = values["hold"]
    else:
        target["crash_at"] = values["at"]


def parse(data: dict[str, Any], where: str) -> Scenario:
    top = params.check(data, TOP, where)
    entries = _app_entries(top["app"], where, top["board"])
    if not entries:
        raise ValueError(f"{where}: a scenario needs at least one [[app]]")
    driver_faults: list[FaultSpec] = []
    exhaustion: Optional[CmaExhaustion] = None
    for index, table in enumerate(top["fault"], 1):
        label = f"{where}: fault {index}"
        kind = table.get("kind")
        rest = {key: value for key, value in table.items() if key != "kind"}
        if kind in DRIVER_FAULTS:
            if driver_of(top["board"]) != "amphion":
                raise ValueError(f"{label}: {kind} is a fault of the Amphion driver; {top['board']} has none")
            try:
                driver_faults.append(fault_spec(kind, rest))
            except ValueError as exc:
                raise ValueError(f"{label}: {exc}") from None
        elif kind in APP_FAULTS:
            values = params.check(rest, APP_FAULTS[kind], f"{label} ({kind})")
            if kind == "cma-exhaustion":
                if exhaustion is not None:
                    raise ValueError(f"{label}: a scenario has at most one cma-exhaustion")
                exhaustion = CmaExhaustion(values["at"], values["seconds"], values["heap"])
            else:
                _apply_app_fault(kind, values, entries, f"{label} ({kind})")
        else:
            raise ValueError(f"{label}: kind must be one of {', '.join([*DRIVER_FAULTS, *APP_FAULTS])}, "
                             f"not {kind!r}")
    try:
        Faults.build(driver_faults, origin=0.0)  # what the daemon will do with them: refuse repeats
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    apps = []
    for entry in entries:
        copies = entry.pop("count")
        for copy in range(1, copies + 1):
            name = entry["name"] + (f"-{copy}" if copies > 1 else "")
            apps.append(App(**{**entry, "name": name}))
    return Scenario(top["name"] or Path(where).stem, top["description"], top["board"], top["fps"],
                    top["allocator"], top["settle"], tuple(apps), tuple(driver_faults), exhaustion)


def load(path: str) -> Scenario:
    """Read and check a scenario file; every problem is a ValueError naming the file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, path)
