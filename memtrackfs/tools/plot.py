"""``memtrackfs plot``: a record (``memtrackfs record``) as a PNG people can read.

Per tracker root, one panel: the device's own memory (firmware, rings: the total less its
instances) at the bottom, each instance stacked on it and named by its process (``comm[pid]``),
the total as a line on top; an instance whose process has exited while it still holds memory is
drawn red and hatched: a leak. Each application's start and exit are marked on its layer
(``▶`` and ``■``), and the legend gives its span. Below, if the record saw any dma-buf, Rockchip's
total with its peak, each reset of the peak (``echo 0 > peak``) marked, and what each
mpp_service device's sessions hold (Rockchip's codecs). Needs matplotlib.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from memtrackfs.tools.record import load_record

MIB = 1 << 20
LEAK = "#d62728"


@dataclass
class Layer:
    """One instance across the samples: its usage (None where it is absent) and its owner."""
    label: str
    usage: list[Optional[int]]
    alive: list[bool]
    first: int
    last: int = -1
    exited: Optional[int] = None  # the first sample where its process had exited
    comm: str = ""
    tgid: int = 0
    spans: list[tuple[int, int]] = field(default_factory=list)


def _layers(samples: list[dict[str, Any]], tracker: str) -> list[Layer]:
    layers: dict[str, Layer] = {}
    for i, sample in enumerate(samples):
        for inst in sample["trackers"].get(tracker, {"instances": []})["instances"]:
            layer = layers.get(inst["key"])
            if layer is None:
                layer = layers[inst["key"]] = Layer("", [None] * len(samples), [True] * len(samples), i,
                                                    tgid=inst["tgid"])
            layer.usage[i] = inst["usage"]
            layer.alive[i] = inst["alive"]
            layer.last = i
            layer.comm = inst["comm"] or layer.comm
            if not inst["alive"] and layer.exited is None:
                layer.exited = i
    ordered = sorted(layers.values(), key=lambda layer: layer.first)
    seen: dict[str, int] = {}
    for layer in ordered:
        name = f"{layer.comm or 'pid'}[{layer.tgid}]" if layer.tgid else "(no process)"
        seen[name] = seen.get(name, 0) + 1
        layer.label = name if seen[name] == 1 else f"{name} #{seen[name]}"
    return ordered


def _spans(mask: list[bool]) -> list[bool]:
    """A mask for fill_between(step="post"): a sample's value holds until the next sample, so each
    run of True also takes the sample after it (else a run would stop one interval short)."""
    return [m or (i > 0 and mask[i - 1]) for i, m in enumerate(mask)]


def _legend_label(layer: Layer, times: list[float]) -> str:
    span = f"{times[layer.first]:g}–{times[layer.last]:g} s"
    if layer.exited is not None and layer.usage[layer.last]:
        held = max(u for u, alive in zip(layer.usage, layer.alive) if u is not None and not alive)
        return f"{layer.label}: exited at {times[layer.exited]:g} s, still holds {held / MIB:.1f} MiB (leak)"
    return f"{layer.label}: {span}"


def _tracker_panel(ax: Any, times: list[float], samples: list[dict[str, Any]], tracker: str) -> None:
    totals = [s["trackers"].get(tracker, {}).get("total") for s in samples]
    layers = _layers(samples, tracker)
    sums = [sum(layer.usage[i] or 0 for layer in layers) for i in range(len(times))]
    device = [max((total or 0) - used, 0) / MIB for total, used in zip(totals, sums)]
    ax.fill_between(times, 0, device, step="post", color="#c7c7c7", label="the device's own (firmware, rpc, ...)")
    base = device
    for n, layer in enumerate(layers):
        color = f"C{n % 10}" if n % 10 != 3 else "C9"  # C3 is red: the leaks' colour
        top = [b + (u or 0) / MIB for b, u in zip(base, layer.usage)]
        live = [u is not None and alive for u, alive in zip(layer.usage, layer.alive)]
        leaked = [u is not None and not alive for u, alive in zip(layer.usage, layer.alive)]
        ax.fill_between(times, base, top, where=_spans(live), step="post", color=color, alpha=0.85,
                        label=_legend_label(layer, times))
        if any(leaked):
            ax.fill_between(times, base, top, where=_spans(leaked), step="post", facecolor="none", edgecolor=LEAK,
                            hatch="///", linewidth=0.0)
            ax.fill_between(times, base, top, where=_spans(leaked), step="post", color=LEAK, alpha=0.25)
        middle = lambda i: (base[i] + top[i]) / 2  # noqa: E731 - where its marks sit on the layer
        ax.plot(times[layer.first], middle(layer.first), marker=">", color="black", markersize=6)
        end = layer.exited if layer.exited is not None else (layer.last + 1 if layer.last + 1 < len(times) else None)
        if end is not None:
            ax.plot(times[end], middle(min(end, layer.last)), marker="s", color=LEAK if layer.exited is not None
                    and layer.usage[layer.last] else "black", markersize=5)
        base = top
    ax.step(times, [(t or 0) / MIB for t in totals], where="post", color="black", linewidth=1.5,
            label="total (Total memory usage)")
    ax.set_title(f"v4l2-memtrack: {tracker}  (▶ start, ■ exit; red hatched: held after its process exited)",
                 fontsize="medium")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(True, alpha=0.3)


def _dmabuf_panel(ax: Any, times: list[float], samples: list[dict[str, Any]]) -> None:
    size = [(s["dmabuf_kib"] or 0) / 1024 for s in samples]
    peak = [s["peak_mib"] for s in samples]
    ax.fill_between(times, 0, size, step="post", color="C0", alpha=0.5, label="rk_dmabuf/size")
    ax.step(times, [p if p is not None else float("nan") for p in peak], where="post", color="C3",
            linestyle="--", label="rk_dmabuf/peak")
    resets = [times[i] for i in range(1, len(peak)) if peak[i] is not None and peak[i - 1] is not None
              and peak[i] < peak[i - 1]]
    for n, t in enumerate(resets):
        ax.axvline(t, color="C3", linestyle=":", linewidth=1, label="peak reset (echo 0 > peak)" if n == 0 else None)
    devices = list(dict.fromkeys(d for s in samples for d in s.get("mpp_kib", {})))
    for n, device in enumerate(devices):  # their buffers are dma-bufs too: lines within rk_dmabuf/size
        ax.step(times, [s.get("mpp_kib", {}).get(device, 0) / 1024 for s in samples], where="post",
                color=f"C{4 + n % 6}", label=f"mpp_service {device} sessions")
    ax.set_title("dma-buf (Rockchip's rk_dmabuf" + ("; what mpp_service sessions hold)" if devices else ")"),
                 fontsize="medium")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(True, alpha=0.3)


def plot(record_path: str, png_path: str) -> None:
    """Draw a record into a PNG (see the module's docstring)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("memtrackfs: plot: needs matplotlib (the `plot` extra): pip install matplotlib") from None
    head, samples = load_record(record_path)
    times = [s["t"] for s in samples]
    trackers = list(dict.fromkeys(name for s in samples for name in s["trackers"]))
    with_dmabuf = any(s["dmabuf_kib"] or s["peak_mib"] or s.get("mpp_kib") for s in samples)
    panels = len(trackers) + with_dmabuf
    if panels == 0:
        raise ValueError(f"{record_path}: its samples hold no tracker and no dma-buf: nothing to draw")
    fig, axes = plt.subplots(panels, 1, sharex=True, figsize=(13, 3.6 * panels + 0.6), squeeze=False)
    for ax, tracker in zip(axes[:, 0], trackers):
        _tracker_panel(ax, times, samples, tracker)
    if with_dmabuf:
        _dmabuf_panel(axes[-1, 0], times, samples)
    axes[-1, 0].set_xlabel("seconds")
    fig.suptitle(f"memory over time: {head['root']} (recorded {head['started']})", fontsize="medium")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
