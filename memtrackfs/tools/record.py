"""``memtrackfs record`` and ``memtrackfs plot``: memory over time, per instance and for dma-bufs.

A record is JSON lines, one sample each: seconds since the start, every tracker's total, the
usage of every node right under a root (the instances), the Rockchip dma-buf size and peak, and
the KiB each mpp_service device's sessions hold.
"""
from __future__ import annotations

import json
import time
from typing import IO, Any, Optional

from memtrackfs.tools.snapshot import take_snapshot


def sample(root: str, started: float) -> dict[str, Any]:
    snap = take_snapshot(root)
    instances = {path: node["usage"] for tracker in snap["trackers"].values()
                 for path, node in tracker["nodes"].items() if node["depth"] == 1}
    dmabuf = snap["dmabuf"] or {}
    return {"t": round(time.monotonic() - started, 3),
            "totals": {name: tracker["total"] for name, tracker in snap["trackers"].items()},
            "instances": instances, "dmabuf_kib": dmabuf.get("size_kib"), "peak_mib": dmabuf.get("peak_mib"),
            "mpp_kib": (snap["mpp"] or {}).get("devices", {})}


def record(root: str, interval: float, out: IO[str], duration: Optional[float] = None) -> int:
    """Sample every ``interval`` seconds until ``duration`` passes or Ctrl-C; return the samples taken."""
    started = time.monotonic()
    taken = 0
    try:
        while duration is None or time.monotonic() - started <= duration:
            out.write(json.dumps(sample(root, started)) + "\n")
            out.flush()
            taken += 1
            time.sleep(max(0.0, started + taken * interval - time.monotonic()))
    except KeyboardInterrupt:
        pass
    return taken


def plot(record_path: str, png_path: str) -> None:
    """Draw each instance's usage and the dma-buf total with its peak, over time, into a PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("memtrackfs plot needs matplotlib: pip install 'memtrackfs[plot]'") from None
    with open(record_path, encoding="utf-8") as f:
        samples = [json.loads(line) for line in f if line.strip()]
    if not samples:
        raise ValueError(f"{record_path} holds no samples")
    times = [s["t"] for s in samples]
    fig, (tracked, dmabuf) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    for path in dict.fromkeys(p for s in samples for p in s["instances"]):
        tracked.plot(times, [s["instances"].get(path, 0) / 2**20 for s in samples], label=path)
    tracked.set_ylabel("tracked MiB (v4l2-memtrack)")
    tracked.legend(fontsize="small", loc="upper left")
    dmabuf.plot(times, [(s["dmabuf_kib"] or 0) / 1024 for s in samples], label="rk_dmabuf size")
    dmabuf.step(times, [s["peak_mib"] or 0 for s in samples], where="post", linestyle="--", label="rk_dmabuf peak")
    for device in dict.fromkeys(d for s in samples for d in s.get("mpp_kib", {})):
        dmabuf.plot(times, [s.get("mpp_kib", {}).get(device, 0) / 1024 for s in samples], label=f"mpp {device}")
    dmabuf.set_ylabel("dma-buf MiB")
    dmabuf.set_xlabel("seconds")
    dmabuf.legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
