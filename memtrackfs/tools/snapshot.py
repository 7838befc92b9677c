"""``memtrackfs snapshot`` and ``memtrackfs diff``: what the kernel files show, and what grew.

A snapshot reads the files (v4l2-memtrack trees, proc/rk_dmabuf) under a root (``/`` for the real
paths, or a mount point) and keeps, as plain JSON:
- per tracker root: its total and every node by path, e.g. ``amphion-vpu/instance[2001/2001]``
  (the root's name, then each node's name and ``[tgid/pid]`` when shown), with its usage and its leaves summed per name;
- the dma-bufs of rk_dmabuf/dev by id, the Rockchip total and peak;
- Rockchip's mpp_service: the KiB each codec device's sessions hold and, where the BSP's
  sessions-summary lists them (6.1), the sessions, keyed ``<device>#<index>`` (pid, buffers);
- per process (tgid): the tracked bytes it owns (nodes' own bytes and leaves, by the tgid the
  file shows) and the KiB of dma-bufs named after it.
"""
from __future__ import annotations

import errno
import json
import os
import time
from collections import Counter
from typing import Any, Optional

from memtrackfs.paths import MEMTRACK_DIR, MPP_SESSIONS_SUMMARY, RK_DMABUF_DIR
from memtrackfs.tools.parse import (
    parse_first_number,
    parse_memtrack,
    parse_mpp_sessions_summary,
    parse_rk_dmabuf_dev,
)

Snapshot = dict[str, Any]


def require_kernel_files(root: str) -> None:
    """OSError saying what is missing when neither the v4l2-memtrack directory nor Rockchip's
    dma-buf total can be read under ``root``: a snapshot of nothing is a mistake, not a result."""
    problems = []
    for path, probe in ((os.path.join(root, MEMTRACK_DIR), os.listdir),
                        (os.path.join(root, RK_DMABUF_DIR, "size"), lambda p: open(p, "rb").close())):
        try:
            probe(path)
            return
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror}")
    hint = "debugfs is root's: run as root" if any("Permission denied" in p for p in problems) else (
        "this machine has neither the v4l2-memtrack RFC nor Rockchip's rk_dmabuf; for a mount, give --mount MNT")
    raise OSError(errno.ENOENT, f"none of the files to read is there ({'; '.join(problems)}): {hint}")


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None


def _label(name: Optional[str], tgid: int, pid: int) -> str:
    label = name if name is not None else "(unnamed)"
    return f"{label}[{tgid}/{pid}]" if tgid and pid else label


def _tracker(text: str, processes: Counter) -> dict[str, Any]:
    total, parsed = parse_memtrack(text)
    nodes: dict[str, dict[str, Any]] = {}
    stack: list[str] = []                  # paths of the current entry's ancestors
    children_usage: dict[str, int] = {}    # per node: the sum of its direct children's usage
    for entry in parsed:
        del stack[entry.depth:]
        parent = stack[-1] if stack else None
        if entry.leaf:
            leaves = nodes[parent]["leaves"].setdefault(entry.name, [0, 0])
            leaves[0] += 1
            leaves[1] += entry.usage
            processes[entry.tgid] += entry.usage
        else:
            # The root is its file's name; below it, each node's label (name[tgid/pid]).
            path = f"{parent}/{_label(entry.name, entry.tgid, entry.pid)}" if parent else str(entry.name)
            suffix = 2
            while path in nodes:  # identical siblings: number them in file order
                path = f"{path.rsplit('#', 1)[0]}#{suffix}"
                suffix += 1
            nodes[path] = {"depth": entry.depth, "usage": entry.usage, "tgid": entry.tgid, "pid": entry.pid,
                           "leaves": {}}
            children_usage[path] = 0
            stack.append(path)
        if parent is not None:
            children_usage[parent] += entry.usage
    for path, below in children_usage.items():
        # A node's own bytes (``self``, hidden when its count is 0) are what its children lack.
        node = nodes[path]
        processes[node["tgid"]] += node["usage"] - below
    return {"total": total, "nodes": nodes}


def take_snapshot(root: str = "/") -> Snapshot:
    processes: Counter = Counter()
    trackers = {}
    memtrack_dir = os.path.join(root, MEMTRACK_DIR)
    for name in sorted(os.listdir(memtrack_dir)) if os.path.isdir(memtrack_dir) else []:
        text = _read(os.path.join(memtrack_dir, name))
        if text is not None:  # it may go between listing and reading
            trackers[name] = _tracker(text, processes)
    dmabuf: Optional[dict[str, Any]] = None
    size, peak, dev = (_read(os.path.join(root, RK_DMABUF_DIR, f)) for f in ("size", "peak", "dev"))
    dmabuf_by_tgid: Counter = Counter()
    if size is not None and dev is not None:
        buffers = {}
        for buf in parse_rk_dmabuf_dev(dev):
            buffers[buf.id] = {"name": buf.name, "exporter": buf.exporter, "kib": buf.kib, "devices": list(buf.devices)}
            owner = buf.name.split("-", 1)[0]
            if owner.isdigit():  # Rockchip's default name: "<tgid>-<comm>"
                dmabuf_by_tgid[int(owner)] += buf.kib
        dmabuf = {"size_kib": parse_first_number(size),
                  "peak_mib": parse_first_number(peak) if peak is not None else None, "buffers": buffers}
    tgids = sorted(set(processes) | set(dmabuf_by_tgid))
    return {
        "taken": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "root": os.path.abspath(root),
        "trackers": trackers,
        "dmabuf": dmabuf,
        "mpp": _mpp(_read(os.path.join(root, MPP_SESSIONS_SUMMARY))),
        "processes": {str(t): {"tracked": processes[t], "dmabuf_kib": dmabuf_by_tgid[t]} for t in tgids if t},
    }


def _mpp(summary: Optional[str]) -> Optional[dict[str, Any]]:
    if summary is None:
        return None
    totals, sessions = parse_mpp_sessions_summary(summary)
    return {"devices": totals,
            "sessions": {f"{s.device}#{s.index}": {"pid": s.pid, "kib": sum(s.buffers) // 1024,
                                                   "buffers": len(s.buffers)} for s in sessions}}


def render_snapshot(snap: Snapshot) -> str:
    lines = [f"snapshot of {snap['root']} at {snap['taken']}"]
    for name, tracker in snap["trackers"].items():
        lines.append(f"tracker {name}: {tracker['total']} bytes")
        for path, node in tracker["nodes"].items():
            leaves = ", ".join(f"{leaf} x{count} {nbytes}" for leaf, (count, nbytes) in node["leaves"].items())
            lines.append(f"  {path}: {node['usage']}" + (f" ({leaves})" if leaves else ""))
    if snap["dmabuf"] is not None:
        d = snap["dmabuf"]
        lines.append(f"dma-buf: {d['size_kib']} KiB in {len(d['buffers'])} buffers, peak {d['peak_mib']} MiB")
    mpp = snap.get("mpp")
    if mpp is not None:
        lines += [f"mpp_service {device}: {kib} KiB" for device, kib in mpp["devices"].items()] or ["mpp_service: no session"]
        lines += [f"  session {key} (pid {s['pid']}): {s['kib']} KiB in {s['buffers']} buffers"
                  for key, s in mpp["sessions"].items()]
    for tgid, usage in snap["processes"].items():
        lines.append(f"process {tgid}: tracked {usage['tracked']} bytes, dma-buf {usage['dmabuf_kib']} KiB")
    return "\n".join(lines) + "\n"


def _delta(before: int, after: int) -> str:
    return f"{after - before:+d} ({before} -> {after})"


def diff_snapshots(a: Snapshot, b: Snapshot) -> tuple[str, bool]:
    """What changed from ``a`` to ``b``, and whether anything grew."""
    lines: list[str] = []
    grew = False
    for name in sorted(set(a["trackers"]) | set(b["trackers"])):
        old = a["trackers"].get(name, {"total": 0, "nodes": {}})
        new = b["trackers"].get(name, {"total": 0, "nodes": {}})
        changes = []
        for path in list(old["nodes"]) + [p for p in new["nodes"] if p not in old["nodes"]]:
            before, after = old["nodes"].get(path), new["nodes"].get(path)
            usage_before = before["usage"] if before else 0
            usage_after = after["usage"] if after else 0
            leaves_before = before["leaves"] if before else {}
            leaves_after = after["leaves"] if after else {}
            leaf_changes = []
            for leaf in sorted(set(leaves_before) | set(leaves_after)):
                (cb, bb), (ca, ba) = leaves_before.get(leaf, (0, 0)), leaves_after.get(leaf, (0, 0))
                if (cb, bb) != (ca, ba):
                    leaf_changes.append(f"      {leaf} [leaf] x{cb} -> x{ca}, bytes {_delta(bb, ba)}")
                    grew |= ba > bb
            if usage_before != usage_after or leaf_changes or (before is None) != (after is None):
                state = " (new)" if before is None else " (gone)" if after is None else ""
                changes.append(f"  {path}: {_delta(usage_before, usage_after)}{state}")
                changes.extend(leaf_changes)
        if old["total"] != new["total"] or changes:
            lines.append(f"tracker {name}: total {_delta(old['total'], new['total'])}")
            lines.extend(changes)
            grew |= new["total"] > old["total"]
    if a["dmabuf"] is not None and b["dmabuf"] is not None:
        old_bufs, new_bufs = a["dmabuf"]["buffers"], b["dmabuf"]["buffers"]
        added = [i for i in new_bufs if i not in old_bufs]
        gone = [i for i in old_bufs if i not in new_bufs]
        size_before, size_after = a["dmabuf"]["size_kib"], b["dmabuf"]["size_kib"]
        if added or gone or size_before != size_after:
            lines.append(f"dma-buf: size KiB {_delta(size_before, size_after)}, {len(added)} new, {len(gone)} gone")
            for sign, ids, bufs in (("+", added, new_bufs), ("-", gone, old_bufs)):
                for i in ids:
                    buf = bufs[i]
                    lines.append(f"  {sign} {i} {buf['name']} {buf['exporter']} {buf['kib']} KiB "
                                 f"{' '.join(buf['devices'])}".rstrip())
            grew |= size_after > size_before
    old_mpp, new_mpp = a.get("mpp"), b.get("mpp")
    if old_mpp is not None and new_mpp is not None:
        for device in list(old_mpp["devices"]) + [d for d in new_mpp["devices"] if d not in old_mpp["devices"]]:
            before_kib, after_kib = old_mpp["devices"].get(device, 0), new_mpp["devices"].get(device, 0)
            if before_kib != after_kib:
                lines.append(f"mpp_service {device}: KiB {_delta(before_kib, after_kib)}")
                grew |= after_kib > before_kib
        for key in [k for k in new_mpp["sessions"] if k not in old_mpp["sessions"]]:
            lines.append(f"  + session {key} (pid {new_mpp['sessions'][key]['pid']}) {new_mpp['sessions'][key]['kib']} KiB")
        for key in [k for k in old_mpp["sessions"] if k not in new_mpp["sessions"]]:
            lines.append(f"  - session {key} (pid {old_mpp['sessions'][key]['pid']}) {old_mpp['sessions'][key]['kib']} KiB")
    for tgid in sorted(set(a["processes"]) | set(b["processes"]), key=int):
        before = a["processes"].get(tgid, {"tracked": 0, "dmabuf_kib": 0})
        after = b["processes"].get(tgid, {"tracked": 0, "dmabuf_kib": 0})
        if before != after:
            lines.append(f"process {tgid}: tracked bytes {_delta(before['tracked'], after['tracked'])}, "
                         f"dma-buf KiB {_delta(before['dmabuf_kib'], after['dmabuf_kib'])}")
    return ("\n".join(lines) + "\n" if lines else "no change\n"), grew


def load_snapshot(path: str) -> Snapshot:
    with open(path, encoding="utf-8") as f:
        try:
            snap = json.load(f)
        except ValueError as exc:
            raise ValueError(f"{path}: not JSON: {exc} (make one with `memtrackfs snapshot --json`)") from None
    if not isinstance(snap, dict) or "trackers" not in snap:
        raise ValueError(f"{path} is not a memtrackfs snapshot (make one with `memtrackfs snapshot --json`)")
    return snap
