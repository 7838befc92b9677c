"""``memtrackfs record``: memory over time, as JSON lines, read from the kernel files.

The first line says what the file is (``{"record": "memtrackfs", "version": 2, ...}``); then one
sample a line: seconds since the start, each tracker's total and its instances (the nodes right
under the root) with the process that owns each (tgid, pid, command name, whether it still runs:
memory an exited process's instance still holds is a leak), Rockchip's dma-buf size and peak,
and the KiB each mpp_service device's sessions hold.
The command name is read from /proc while the process runs and kept after it has exited.
"""
from __future__ import annotations

import json
import os
import time
from typing import IO, Any, Optional

from memtrackfs.processes import comm, identify
from memtrackfs.tools.snapshot import take_snapshot

FORMAT = "memtrackfs"
VERSION = 2


def header(root: str) -> dict[str, Any]:
    return {"record": FORMAT, "version": VERSION, "root": os.path.abspath(root),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


class Sampler:
    """Samples the files under ``root``; remembers the command names of processes seen running."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.started = time.monotonic()
        self._comms: dict[tuple[int, int], str] = {}  # (tgid, start time) -> command name

    def _owner(self, tgid: int) -> tuple[str, bool]:
        process = identify(tgid) if tgid > 0 else None
        if process is None:
            known = [name for (pid, _), name in self._comms.items() if pid == tgid]
            return (known[-1] if known else ""), False
        if process not in self._comms:
            name = comm(tgid)
            if name is None:
                return "", False
            self._comms[process] = name
        return self._comms[process], True

    def sample(self) -> dict[str, Any]:
        snap = take_snapshot(self.root)
        trackers = {}
        for name, tracker in snap["trackers"].items():
            instances = []
            for path, node in tracker["nodes"].items():
                if node["depth"] != 1:
                    continue
                comm, alive = self._owner(node["tgid"])
                instances.append({"key": path.split("/", 1)[1], "name": path.split("/", 1)[1].split("[", 1)[0],
                                  "tgid": node["tgid"], "pid": node["pid"], "comm": comm, "alive": alive,
                                  "usage": node["usage"]})
            trackers[name] = {"total": tracker["total"], "instances": instances}
        dmabuf = snap["dmabuf"] or {}
        return {"t": round(time.monotonic() - self.started, 3), "trackers": trackers,
                "dmabuf_kib": dmabuf.get("size_kib"), "peak_mib": dmabuf.get("peak_mib"),
                "mpp_kib": (snap["mpp"] or {}).get("devices", {})}


def record(root: str, interval: float, out: IO[str], duration: Optional[float] = None) -> int:
    """Sample every ``interval`` seconds until ``duration`` passes or Ctrl-C; return the samples taken."""
    sampler = Sampler(root)
    out.write(json.dumps(header(root)) + "\n")
    taken = 0
    try:
        while duration is None or time.monotonic() - sampler.started <= duration:
            out.write(json.dumps(sampler.sample()) + "\n")
            out.flush()
            taken += 1
            time.sleep(max(0.0, sampler.started + taken * interval - time.monotonic()))
    except KeyboardInterrupt:
        pass
    return taken


def load_record(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the samples of a record file; ValueError naming the file and line if it is not one."""
    with open(path, encoding="utf-8") as f:
        lines = [(number, line) for number, line in enumerate(f, 1) if line.strip()]
    try:
        rows = [json.loads(line) for _, line in lines]
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON lines: {exc}") from None
    if not rows or not isinstance(rows[0], dict) or rows[0].get("record") != FORMAT:
        raise ValueError(f"{path} is not a memtrackfs record (make one with `memtrackfs record`)")
    if rows[0].get("version") != VERSION:
        raise ValueError(f"{path}: a version {rows[0].get('version')} record; this memtrackfs reads version {VERSION}")
    if len(rows) < 2:
        raise ValueError(f"{path} holds no samples")
    return rows[0], rows[1:]
