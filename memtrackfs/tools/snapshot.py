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


# How a file that went away answers: gone before the open (ENOENT), or between the open and the
# read (debugfs and memtrackfs: EIO; sysfs: ENODEV).
_VANISHED = (errno.ENOENT, errno.EIO, errno.ENODEV, errno.ESTALE)


def _read(path: str) -> Optional[bytes]:
    """The file's bytes, or None if it went away (a root destroyed while we list and read)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        if exc.errno in _VANISHED:
            return None
        raise


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def shown(name: str) -> str:
    """A name for a line of text: what is not printable (a board's file may hold any) escaped."""
    return name if name.isprintable() else name.encode("unicode_escape").decode("ascii")


def _label(name: Optional[str], tgid: int, pid: int) -> str:
    label = name if name is not None else "(unnamed)"
    return f"{label}[{tgid}/{pid}]" if tgid and pid else label


def _tracker(name: str, text: str, processes: Counter) -> dict[str, Any]:
    total, parsed = parse_memtrack(text, root=name)
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
    """What the files under ``root`` show. A file that goes while it is read is skipped; one that
    cannot be read as its format is listed in ``unreadable`` (path: why), not guessed at."""
    processes: Counter = Counter()
    trackers = {}
    unreadable: dict[str, str] = {}
    memtrack_dir = os.path.join(root, MEMTRACK_DIR)
    for name in sorted(os.listdir(memtrack_dir)) if os.path.isdir(memtrack_dir) else []:
        data = _read(os.path.join(memtrack_dir, name))
        if data is None:  # it went between listing and reading
            continue
        found: Counter = Counter()
        try:
            trackers[name] = _tracker(name, _text(data), found)
        except ValueError as exc:
            unreadable[os.path.join(MEMTRACK_DIR, name)] = str(exc)
            continue
        processes.update(found)
    dmabuf: Optional[dict[str, Any]] = None
    size, peak, dev = (_read(os.path.join(root, RK_DMABUF_DIR, f)) for f in ("size", "peak", "dev"))
    dmabuf_by_tgid: Counter = Counter()
    try:
        rk_buffers = parse_rk_dmabuf_dev(dev) if size is not None and dev is not None else None
    except ValueError as exc:
        unreadable[os.path.join(RK_DMABUF_DIR, "dev")] = str(exc)
        rk_buffers = None
    if rk_buffers is not None:
        buffers = {}
        for buf in rk_buffers:
            buffers[buf.id] = {"name": buf.name, "exporter": buf.exporter, "kib": buf.kib, "devices": list(buf.devices)}
            owner = buf.name.split("-", 1)[0]
            if owner.isdigit():  # Rockchip's default name: "<tgid>-<comm>"
                dmabuf_by_tgid[int(owner)] += buf.kib
        dmabuf = {"size_kib": parse_first_number(_text(size)),
                  "peak_mib": parse_first_number(_text(peak)) if peak is not None else None, "buffers": buffers}
    tgids = sorted(set(processes) | set(dmabuf_by_tgid))
    try:
        mpp = _mpp(_read(os.path.join(root, MPP_SESSIONS_SUMMARY)))
    except ValueError as exc:
        unreadable[MPP_SESSIONS_SUMMARY] = str(exc)
        mpp = None
    return {
        "taken": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "root": os.path.abspath(root),
        "trackers": trackers,
        "dmabuf": dmabuf,
        "mpp": mpp,
        "processes": {str(t): {"tracked": processes[t], "dmabuf_kib": dmabuf_by_tgid[t]} for t in tgids if t},
        "unreadable": unreadable,
    }


def _mpp(summary: Optional[bytes]) -> Optional[dict[str, Any]]:
    if summary is None:
        return None
    totals, sessions = parse_mpp_sessions_summary(_text(summary))
    return {"devices": totals,
            "sessions": {f"{s.device}#{s.index}": {"pid": s.pid, "kib": sum(s.buffers) // 1024,
                                                   "buffers": len(s.buffers)} for s in sessions}}


def render_snapshot(snap: Snapshot) -> str:
    lines = [f"snapshot of {snap['root']} at {snap['taken']}"]
    for name, tracker in snap["trackers"].items():
        lines.append(f"tracker {shown(name)}: {tracker['total']} bytes")
        for path, node in tracker["nodes"].items():
            leaves = ", ".join(f"{shown(leaf)} x{count} {nbytes}" for leaf, (count, nbytes) in node["leaves"].items())
            lines.append(f"  {shown(path)}: {node['usage']}" + (f" ({leaves})" if leaves else ""))
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
                    leaf_changes.append(f"      {shown(leaf)} [leaf] x{cb} -> x{ca}, bytes {_delta(bb, ba)}")
                    grew |= ba > bb
            if usage_before != usage_after or leaf_changes or (before is None) != (after is None):
                state = " (new)" if before is None else " (gone)" if after is None else ""
                changes.append(f"  {shown(path)}: {_delta(usage_before, usage_after)}{state}")
                changes.extend(leaf_changes)
        if old["total"] != new["total"] or changes:
            lines.append(f"tracker {shown(name)}: total {_delta(old['total'], new['total'])}")
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
                    lines.append(f"  {sign} {i} {shown(buf['name'])} {shown(buf['exporter'])} {buf['kib']} KiB "
                                 f"{' '.join(shown(d) for d in buf['devices'])}".rstrip())
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


def _int(value: Any) -> bool:
    return type(value) is int


def _mapping(value: Any, check: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and check(v) for k, v in value.items())


def _is_node(node: Any) -> bool:
    return (isinstance(node, dict) and _int(node.get("usage"))
            and _mapping(node.get("leaves"), lambda leaf: isinstance(leaf, list) and len(leaf) == 2
                         and all(_int(n) for n in leaf)))


def _is_buffer(buf: Any) -> bool:
    return (isinstance(buf, dict) and isinstance(buf.get("name"), str) and isinstance(buf.get("exporter"), str)
            and _int(buf.get("kib")) and isinstance(buf.get("devices"), list)
            and all(isinstance(d, str) for d in buf["devices"]))


def _snapshot_problem(snap: Any) -> Optional[str]:
    """What keeps ``snap`` from being a snapshot ``diff_snapshots`` can read, or None."""
    if not isinstance(snap, dict):
        return "not a JSON object"
    if not _mapping(snap.get("trackers"), lambda t: isinstance(t, dict) and _int(t.get("total"))
                    and _mapping(t.get("nodes"), _is_node)):
        return "its 'trackers' are not trackers"
    dmabuf = snap.get("dmabuf")
    if dmabuf is not None and not (isinstance(dmabuf, dict) and _int(dmabuf.get("size_kib"))
                                   and _mapping(dmabuf.get("buffers"), _is_buffer)):
        return "its 'dmabuf' is not dma-buf figures"
    mpp = snap.get("mpp")
    if mpp is not None and not (isinstance(mpp, dict) and _mapping(mpp.get("devices"), _int)
                                and _mapping(mpp.get("sessions"), lambda s: isinstance(s, dict)
                                             and _int(s.get("pid")) and _int(s.get("kib")))):
        return "its 'mpp' is not mpp_service figures"
    if not _mapping(snap.get("processes"), lambda p: isinstance(p, dict) and _int(p.get("tracked"))
                    and _int(p.get("dmabuf_kib"))) or not all(k.isdigit() for k in snap["processes"]):
        return "its 'processes' are not processes"
    return None


def load_snapshot(path: str) -> Snapshot:
    """A snapshot written by ``memtrackfs snapshot --json``; ValueError naming the file if not."""
    try:
        with open(path, "rb") as f:
            snap = json.loads(f.read())
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:  # not UTF-8, not JSON
        raise ValueError(f"{path}: not JSON: {exc} (make one with `memtrackfs snapshot --json`)") from None
    problem = _snapshot_problem(snap)
    if problem is not None:
        raise ValueError(f"{path}: not a memtrackfs snapshot: {problem} (make one with `memtrackfs snapshot --json`)")
    return snap
