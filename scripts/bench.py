#!/usr/bin/env python3
"""memtrackfs benchmark: the figures and targets of issue 6, measured on this machine.

    .venv/bin/python scripts/bench.py [--quick] [--json FILE]

1. small-file latency: open+read-to-EOF+close of proc/rk_dmabuf/size on our mount, on a minimal
   C libfuse3 filesystem serving the same bytes (scripts/bench/minimal_fs.c, built here with gcc,
   mounted like ours: entry_timeout=0, attr_timeout=0, negative_timeout=0, direct_io, st_size 0,
   default_permissions, multithreaded loop) and on tmpfs;
2. tree scale: `cat` of a v4l2-memtrack file with 1k..1M named leaves over 64 instances, and the
   same trees rendered in-process by ours and by the RFC's algorithm (subtree re-summed for every
   printed node);
3. allocation throughput through the socket (named add + matching sub) and in-process;
4. daemon RSS per tracked named leaf at 1M leaves (psutil, before/after, pipelined adds);
5. VIDIOC_G_EXT_CTRLS(V4L2_CID_MEMORY_USAGE) on the emulated decoder (`vpu_sim daemon`) against the
   small-file latency, and how long the control takes to reflect a REQBUFS (notify delay 200 ms);
6. a 1080p v4l2-ctl streaming decode inside `memtrackfs run` against the frames' display time;
7. `ps -e`, `pgrep` and `lsof -n` inside `memtrackfs run` (its /proc is the proc union) against the
   same commands in the host's mount namespace, run alternately by one process inside the run
   (setns for the host's turns); with libfuse3 (the default) and with fusepy 3.0.1 on libfuse2
   when scripts/test.sh has installed it.
8. fairness and memory under a flood: one client's request-reply latency while another pipelines
   heavy requests (target: median under 50 ms), and the daemon's RSS while a client pipelines
   requests with large replies and never reads them (10 s each; 3 s with --quick).

Every figure is the median of repeated runs with the spread (min..max) over them; comparisons are
ratios per run, measured interleaved. The bench mounts its own filesystems in a temp dir and
unmounts them on exit, error, Ctrl-C or SIGTERM. Needs root (FUSE, tmpfs), gcc and libfuse3-dev.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP))
_VENV_PY = TOP / ".venv" / "bin" / "python"
PY = str(_VENV_PY) if _VENV_PY.exists() else sys.executable
C_SOURCE = TOP / "scripts" / "bench" / "minimal_fs.c"
SMALL_FILE = "proc/rk_dmabuf/size"
INSTANCES = 64
LEAF_NAMES = ("capture", "output", "mbi", "dcp", "bitstream-ring-buffer", "udata", "fw", "rpc")
NOTIFY_DELAY_MS = 200  # amphion.NOTIFY_DELAY_MS, the RFC's coalescing delay


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- statistics -----------------------------------------------------------------------------------

def summary(values: list[float]) -> dict[str, Any]:
    """Median and spread of per-run values (each run's own value, e.g. its median latency)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "runs": values}


def fmt_num(value: float, unit: str) -> str:
    if unit == "us":
        return f"{value:.0f}" if value >= 10 else f"{value:.1f}"
    if unit == "s":
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    if unit == "ms":
        return f"{value:.1f}" if value >= 1 else f"{value:.2f}"
    if unit in ("x", "B/leaf"):
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    if unit == "ops/s":
        return f"{value / 1000:.1f}k"
    return f"{value:.3g}"


def fmt_summary(s: dict[str, Any], unit: str) -> str:
    shown = unit if unit not in ("ops/s", "x") else ("ops/s" if unit == "ops/s" else "x")
    if s["n"] == 1:
        return f"{fmt_num(s['median'], unit)} {shown}"
    return (f"{fmt_num(s['median'], unit)} {shown} "
            f"[{fmt_num(s['min'], unit)}..{fmt_num(s['max'], unit)}, n={s['n']}]")


class Results:
    def __init__(self) -> None:
        self.figures: list[dict[str, Any]] = []
        self.raw: dict[str, Any] = {}
        self.notes: list[str] = []
        self.errors: list[str] = []

    def add(self, number: str, figure: str, stats: Optional[dict[str, Any]], unit: str, target: str = "-",
            check: Optional[Callable[[float], bool]] = None, note: str = "") -> None:
        met = None if check is None or stats is None else bool(check(stats["median"]))
        self.figures.append({"number": number, "figure": figure, "target": target, "unit": unit,
                             "measured": stats, "met": met, "note": note})

    def failed(self, number: str, figure: str, error: str) -> None:
        self.errors.append(f"{figure}: {error}")
        self.figures.append({"number": number, "figure": figure, "target": "-", "unit": "",
                             "measured": None, "met": False, "note": f"FAILED: {error}"})


# -- cleanup-safe resources -----------------------------------------------------------------------

def mounted(path: str) -> Optional[str]:
    """The fstype mounted at path, if any (from /proc/self/mountinfo)."""
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) >= 5 and fields[4].replace("\\040", " ") == path:
                found = right.split()[0]
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Bench:
    """Owns the temp dir and everything mounted or started in it; ``close`` undoes all of it."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.tmp = tempfile.mkdtemp(prefix="mtfs-bench-")
        self.stack = contextlib.ExitStack()
        self.results = Results()

    def close(self) -> None:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        try:
            self.stack.close()
        finally:
            signal.signal(signal.SIGINT, old)
            left = [line.split()[4] for line in open("/proc/self/mountinfo") if self.tmp in line]
            if left:
                log(f"WARNING: still mounted, {self.tmp} kept: {left}")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, name)

    # -- memtrackfs -----------------------------------------------------------------------------

    def mount_memtrackfs(self, name: str) -> tuple[str, str, int]:
        mnt, sock = self.path(name), self.path(name + ".sock")
        os.makedirs(mnt)
        self.stack.callback(self._umount_memtrackfs, mnt)
        done = subprocess.run([PY, "-m", "memtrackfs", "mount", mnt, "--socket", sock], cwd=TOP,
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"memtrackfs mount failed: {done.stderr.strip() or done.stdout.strip()}")
        pid = int(done.stdout.rsplit("daemon pid", 1)[1].split()[0])
        return mnt, sock, pid

    def _umount_memtrackfs(self, mnt: str) -> None:
        if mounted(mnt) is None:
            return
        done = subprocess.run([PY, "-m", "memtrackfs", "umount", mnt], cwd=TOP, capture_output=True,
                              text=True, timeout=60)
        if done.returncode != 0 or mounted(mnt) is not None:
            log(f"memtrackfs umount {mnt}: {done.stderr.strip()}; detaching")
            subprocess.run(["fusermount", "-uz", mnt], capture_output=True)

    # -- the C floor ----------------------------------------------------------------------------

    def build_minimal_fs(self) -> str:
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True, text=True)
        if flags.returncode != 0:
            raise RuntimeError("pkg-config fuse3 failed: install libfuse3-dev (scripts/install.sh does)")
        binary = self.path("minimal_fs")
        cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-o", binary, str(C_SOURCE), *flags.stdout.split()]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building {C_SOURCE.name} failed:\n{done.stderr}")
        return binary

    def mount_minimal_fs(self, binary: str, content: bytes) -> str:
        mnt = self.path("c")
        os.makedirs(mnt)
        logf = open(self.path("minimal_fs.log"), "wb")
        self.stack.callback(logf.close)
        # -f: a child we can stop; -o default_permissions as memtrackfs; the timeouts and direct_io
        # are set in its init(), as memtrackfs's mount options set them.
        proc = subprocess.Popen([binary, "--content", content.decode(), mnt, "-f", "-o",
                                 "default_permissions,fsname=minimal_fs,subtype=minimal_fs"],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        self.stack.callback(self._umount_minimal_fs, mnt, proc)
        wait_until(lambda: mounted(mnt) is not None or proc.poll() is not None, 10, "minimal_fs to mount")
        if proc.poll() is not None:
            raise RuntimeError(f"minimal_fs exited {proc.returncode}: {open(self.path('minimal_fs.log')).read()}")
        return mnt

    def _umount_minimal_fs(self, mnt: str, proc: subprocess.Popen) -> None:
        if mounted(mnt) is not None:
            subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            stop_process(proc)
        if mounted(mnt) is not None:
            subprocess.run(["fusermount3", "-uz", mnt], capture_output=True)

    def mount_tmpfs(self, content: bytes) -> str:
        mnt = self.path("tmpfs")
        os.makedirs(mnt)
        if os.geteuid() == 0:
            self.stack.callback(lambda: mounted(mnt) and subprocess.run(["umount", mnt], capture_output=True))
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "bench-tmpfs", mnt], check=True)
        elif os.path.isdir("/dev/shm"):
            mnt = tempfile.mkdtemp(prefix="mtfs-bench-", dir="/dev/shm")
            self.stack.callback(shutil.rmtree, mnt, True)
        os.makedirs(os.path.join(mnt, os.path.dirname(SMALL_FILE)))
        with open(os.path.join(mnt, SMALL_FILE), "wb") as f:
            f.write(content)
        return mnt

    # -- processes ------------------------------------------------------------------------------

    def spawn(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        proc = subprocess.Popen(argv, cwd=TOP, **kwargs)
        self.stack.callback(stop_process, proc)
        return proc


# -- the driver socket, raw (the client must not be the bottleneck) ----------------------------------

class RawClient:
    def __init__(self, path: str, destroy_on_close: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.pending = b""
        self.server = self.call("hello", client="bench", destroy_on_close=destroy_on_close)

    def close(self) -> None:
        self.sock.close()

    def _line(self) -> bytes:
        while b"\n" not in self.pending:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("memtrackfs closed the connection")
            self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        return line

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        self.sock.sendall((json.dumps({"id": 0, "op": op, **fields}) + "\n").encode())
        reply = json.loads(self._line())
        if not reply.get("ok"):
            raise RuntimeError(f"{op}: {reply.get('errno')}: {reply.get('error')}")
        return reply

    def request_reply(self, lines: list[bytes], count: int) -> None:
        """One request at a time: send, wait for its reply line, next."""
        sock, n = self.sock, len(lines)
        for i in range(count):
            sock.sendall(lines[i % n])
            data = sock.recv(4096)
            while not data.endswith(b"\n"):
                data += sock.recv(4096)
            if b'"ok":false' in data:
                raise RuntimeError(f"request refused: {data!r}")

    def pipeline(self, chunks: Iterable[bytes], count: int) -> None:
        """Send every chunk from a writer thread while reading ``count`` replies; all must be ok."""
        failure: list[BaseException] = []

        def writer() -> None:
            try:
                for chunk in chunks:
                    self.sock.sendall(chunk)
            except BaseException as exc:  # reported by the reader's check below
                failure.append(exc)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        got, refused, tail = 0, 0, b""
        recv = self.sock.recv
        while got < count:
            data = recv(1 << 20)
            if not data:
                raise ConnectionError(f"memtrackfs closed the connection after {got} of {count} replies")
            got += data.count(b"\n")
            data = tail + data
            cut = data.rfind(b"\n") + 1
            refused += data.count(b'"ok":false', 0, cut)
            tail = data[cut:]
        thread.join()
        if failure:
            raise RuntimeError(f"pipelined send failed: {failure[0]!r}")
        if refused:
            raise RuntimeError(f"{refused} of {count} pipelined requests were refused")


def add_sub_lines(node: int, pairs: int = 1) -> bytes:
    """``pairs`` named adds each followed by the matching sub, as a driver allocating and freeing."""
    add = b'{"id":1,"op":"add","node":%d,"bytes":1048576,"name":"capture","tgid":4242,"pid":4243}\n' % node
    sub = b'{"id":2,"op":"sub","node":%d,"bytes":1048576,"name":"capture"}\n' % node
    return (add + sub) * pairs


def leaf_request(i: int, nodes: list[int]) -> bytes:
    inst = i % INSTANCES
    return (b'{"id":%d,"op":"add","node":%d,"bytes":%d,"name":"%s","tgid":%d,"pid":%d}\n'
            % (i, nodes[inst], leaf_bytes(i), LEAF_NAMES[(i // INSTANCES) % len(LEAF_NAMES)].encode(),
               3000 + inst, 3000 + inst))


def leaf_bytes(i: int) -> int:
    return 4096 * (1 + (i // (INSTANCES * len(LEAF_NAMES))) % 16)


# -- 1. small-file latency --------------------------------------------------------------------------

def read_loop(path: str, count: int) -> list[int]:
    """Nanoseconds of each open + read to EOF + close."""
    times = []
    open_, read, close, now = os.open, os.read, os.close, time.perf_counter_ns
    for _ in range(count):
        start = now()
        fd = open_(path, os.O_RDONLY)
        while read(fd, 65536):
            pass
        close(fd)
        times.append(now() - start)
    return times


def bench_small_file(b: Bench, ours: str) -> float:
    r = b.results
    rounds, per = (3, 100) if b.quick else (21, 400)
    with open(os.path.join(ours, SMALL_FILE), "rb") as f:
        content = f.read()
    binary = b.build_minimal_fs()
    cfs = b.mount_minimal_fs(binary, content)
    tmpfs = b.mount_tmpfs(content)
    targets = {"ours": ours, "c": cfs, "tmpfs": tmpfs}
    for name, mnt in targets.items():
        with open(os.path.join(mnt, SMALL_FILE), "rb") as f:
            got = f.read()
        if got != content:
            raise RuntimeError(f"{name} serves {got!r}, not {content!r}")
        read_loop(os.path.join(mnt, SMALL_FILE), 50)  # warm up
    runs: dict[str, list[float]] = {name: [] for name in targets}
    ratios = []
    names = list(targets)
    for i in range(rounds):
        medians = {}
        for name in names[i % 3:] + names[:i % 3]:  # rotate the order: no position bias
            medians[name] = statistics.median(read_loop(os.path.join(targets[name], SMALL_FILE), per)) / 1000
            runs[name].append(medians[name])
        ratios.append(medians["ours"] / medians["c"])
    r.raw["small_file"] = {"runs_us": runs, "ratio_runs": ratios, "ops_per_run": per, "content": content.decode()}
    r.add("1", "small file: ours / C libfuse3, ratio", summary(ratios), "x", "<= 1.5", lambda v: v <= 1.5,
          note="C fs mounted like ours: entry/attr/negative_timeout=0, direct_io, st_size 0, "
               "default_permissions, multithreaded")
    r.add("1", "small file: ours (open+read+close)", summary(runs["ours"]), "us")
    r.add("1", "small file: C libfuse3 minimal fs", summary(runs["c"]), "us")
    r.add("1", "small file: tmpfs", summary(runs["tmpfs"]), "us")
    return statistics.median(runs["ours"])


# -- 2 + 4. tree scale and memory ---------------------------------------------------------------------

def rfc_render(root: Any) -> bytes:
    """v4l2_memtrack_seq_show as the RFC computes it: every printed node's usage re-summed from its
    subtree (v4l2_memtrack_sum_bytes_locked, a pre-order walk adding each node's own bytes)."""
    from memtrackfs.model.tracker import SIZE_MAX, Leaf

    def sum_bytes(item: Any) -> int:
        if type(item) is Leaf:
            return item.bytes
        total = 0
        for _, node in item.walk():
            total += node.bytes if type(node) is Leaf else node.own
        return total & SIZE_MAX

    out = [f"Total memory usage: {sum_bytes(root)} bytes\n"]
    for depth, node in root.walk():
        line = " " * (depth * 2)
        if node.name is not None:
            line += node.name + " "
        leaf = type(node) is Leaf
        if leaf:
            line += "[leaf] "
        if node.tgid and node.pid:
            line += f"(tgid={node.tgid}, pid={node.pid}) "
        line += f"usage: {sum_bytes(node)}"
        if not leaf:
            count, children = node.count, node.children
            if count > 1 or (count == 1 and children):
                line += f" (count={count}"
                if children:
                    line += f", self={node.own}"
                line += ")"
        out.append(line + "\n")
    return "".join(out).encode("utf-8")


def time_cat(path: str) -> float:
    start = time.perf_counter()
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def bench_tree_and_memory(b: Bench) -> None:
    import psutil

    from memtrackfs.kernel import Kernel
    from memtrackfs.render.memtrack import render_memtrack

    r = b.results
    sizes = [1_000, 10_000, 100_000] if b.quick else [1_000, 10_000, 100_000, 1_000_000]
    reps = {1_000: 9, 10_000: 9, 100_000: 5, 1_000_000: 3}
    if b.quick:
        reps = {1_000: 3, 10_000: 3, 100_000: 3}
    mnt, sock, pid = b.mount_memtrackfs("tree")
    daemon = psutil.Process(pid)
    client = RawClient(sock, destroy_on_close=False)
    root = client.call("root", name="bench-tree", tgid=3000, pid=3000)["node"]
    nodes = [client.call("node", parent=root, name="instance", tgid=3000 + i, pid=3000 + i)["node"]
             for i in range(INSTANCES)]
    path = os.path.join(mnt, "sys/kernel/debug/v4l2-memtrack/bench-tree")
    time_cat(path)
    rss0 = daemon.memory_info().rss

    # The same tree in-process, for ours vs the RFC's algorithm without FUSE in between.
    kernel = Kernel()
    tracker = kernel.tracker
    kroot = tracker.create_root("bench-tree", 3000, 3000)
    knodes = [tracker.create_node(kroot, "instance", 3000 + i, 3000 + i) for i in range(INSTANCES)]

    cat_runs: dict[int, list[float]] = {}
    ours_runs: dict[int, list[float]] = {}
    rfc_runs: dict[int, list[float]] = {}
    ratio_runs: dict[int, list[float]] = {}
    have = 0
    add_rate = []
    rss1 = None
    ids = [3000 + i for i in range(INSTANCES)]  # one int object per process id, as the daemon keeps them
    for size in sizes:
        start = time.perf_counter()
        chunk = 20_000

        def chunks(lo: int = have, hi: int = size) -> Iterator[bytes]:
            for first in range(lo, hi, chunk):
                yield b"".join(leaf_request(i, nodes) for i in range(first, min(first + chunk, hi)))

        client.pipeline(chunks(), size - have)
        add_rate.append((size - have) / (time.perf_counter() - start))
        for i in range(have, size):
            inst = i % INSTANCES
            tracker.add(knodes[inst], leaf_bytes(i), LEAF_NAMES[(i // INSTANCES) % len(LEAF_NAMES)],
                        ids[inst], ids[inst])
        have = size
        if size == sizes[-1]:
            rss1 = daemon.memory_info().rss  # before any render of the biggest tree
        with open(path, "rb") as f:
            shown = f.read()
        expected = render_memtrack(kroot)
        if shown != expected:
            raise RuntimeError(f"the mounted file at {size} leaves differs from the in-process render")
        if rfc_render(kroot) != expected:
            raise RuntimeError(f"the RFC-algorithm render differs from ours at {size} leaves")
        lines = shown.count(b"\n")
        if lines != size + INSTANCES + 2:
            raise RuntimeError(f"{lines} lines at {size} leaves, expected {size + INSTANCES + 2}")
        cat_runs[size], ours_runs[size], rfc_runs[size], ratio_runs[size] = [], [], [], []
        for _ in range(reps[size]):
            cat_runs[size].append(time_cat(path))
            t0 = time.perf_counter()
            render_memtrack(kroot)
            t1 = time.perf_counter()
            rfc_render(kroot)
            t2 = time.perf_counter()
            ours_runs[size].append(t1 - t0)
            rfc_runs[size].append(t2 - t1)
            ratio_runs[size].append((t2 - t1) / (t1 - t0))
        log(f"tree {size} leaves: cat {statistics.median(cat_runs[size]):.3f} s, "
            f"in-process ours {statistics.median(ours_runs[size]):.3f} s, RFC {statistics.median(rfc_runs[size]):.3f} s")
    client.close()
    kernel.shutdown()
    big = sizes[-1]
    per_leaf = (rss1 - rss0) / big
    r.raw["tree"] = {"cat_s": cat_runs, "inprocess_ours_s": ours_runs, "inprocess_rfc_s": rfc_runs,
                     "rfc_over_ours": ratio_runs, "pipelined_add_rate": add_rate}
    r.raw["memory"] = {"rss_before": rss0, "rss_after": rss1, "leaves": big}
    label = {1_000: "1k", 10_000: "10k", 100_000: "100k", 1_000_000: "1M"}
    for size in sizes:
        if size == 100_000:
            r.add("2", "tree: cat, 100k leaves", summary(cat_runs[size]), "s", "<= 0.25 s", lambda v: v <= 0.25)
        else:
            r.add("2", f"tree: cat, {label[size]} leaves", summary(cat_runs[size]), "s")
    growth = [c100 / c10 for c100, c10 in zip(cat_runs[100_000], cat_runs[10_000])]
    r.add("2", "tree: cat growth 10k -> 100k", summary(growth), "x", "<= 11x", lambda v: v <= 11,
          note="per-run ratios of cat times")
    for size in sizes:
        r.add("2", f"tree: in-process render {label[size]}: ours", summary([v * 1000 for v in ours_runs[size]]), "ms")
        r.add("2", f"tree: in-process render {label[size]}: RFC algorithm / ours", summary(ratio_runs[size]), "x",
              note=f"RFC algorithm (Python, same tree) {statistics.median(rfc_runs[size]) * 1000:.1f} ms")
    r.add("4", f"memory: daemon RSS per named leaf at {label[big]}", summary([per_leaf]), "B/leaf",
          "<= 200 B", lambda v: v <= 200,
          note=f"RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB" + (" (quick: 100k, not 1M)" if b.quick else ""))
    b._umount_memtrackfs(mnt)  # now: a 1M-leaf daemon holds hundreds of MiB


# -- 3. allocation throughput -------------------------------------------------------------------------

def worker_main(socket_path: str, ops: int) -> int:
    """One of the concurrent clients: ready, wait for go, pipeline ``ops`` requests, report."""
    client = RawClient(socket_path, destroy_on_close=True)
    root = client.call("root", name=f"bench-client-{os.getpid()}")["node"]
    node = client.call("node", parent=root, name="instance")["node"]
    blob = add_sub_lines(node, 1000)
    per_blob = 2000
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    start = time.monotonic()
    client.pipeline((blob for _ in range(ops // per_blob)), ops // per_blob * per_blob)
    end = time.monotonic()
    print(json.dumps({"start": start, "end": end, "ops": ops // per_blob * per_blob}), flush=True)
    client.close()
    return 0


def bench_throughput(b: Bench, sock: str) -> None:
    from memtrackfs.kernel import Kernel

    r = b.results
    runs = 3 if b.quick else 5
    pipelined_ops = 40_000 if b.quick else 100_000
    worker_ops = 20_000 if b.quick else 60_000
    rr_ops = 4_000 if b.quick else 10_000
    core_ops = 100_000 if b.quick else 300_000

    client = RawClient(sock)
    root = client.call("root", name="bench-throughput")["node"]
    node = client.call("node", parent=root, name="instance")["node"]
    blob = add_sub_lines(node, 1000)
    pair = add_sub_lines(node).splitlines(keepends=True)
    client.pipeline([blob], 2000)  # warm up
    single, rr = [], []
    for _ in range(runs):
        start = time.perf_counter()
        client.pipeline((blob for _ in range(pipelined_ops // 2000)), pipelined_ops)
        single.append(pipelined_ops / (time.perf_counter() - start))
        start = time.perf_counter()
        client.request_reply(pair, rr_ops)
        rr.append(rr_ops / (time.perf_counter() - start))
    client.close()
    log(f"throughput: 1 client {statistics.median(single):.0f} ops/s pipelined, {statistics.median(rr):.0f} request-reply")

    four = []
    for _ in range(runs):
        workers = [b.spawn([PY, str(Path(__file__).resolve()), "--worker", sock, str(worker_ops)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(4)]
        for w in workers:
            if w.stdout.readline().strip() != "ready":
                raise RuntimeError("a throughput worker did not start")
        for w in workers:
            w.stdin.write("go\n")
            w.stdin.flush()
        reports = []
        for w in workers:
            line = w.stdout.readline()
            if w.wait(60) != 0 or not line:
                raise RuntimeError(f"a throughput worker failed (exit {w.returncode})")
            reports.append(json.loads(line))
        wall = max(x["end"] for x in reports) - min(x["start"] for x in reports)
        four.append(sum(x["ops"] for x in reports) / wall)

    log(f"throughput: 4 clients {statistics.median(four):.0f} ops/s")
    core = []
    kernel = Kernel()
    with kernel.transaction() as k:
        croot = k.tracker.create_root("bench-core", 1, 1)
        cnode = k.tracker.create_node(croot, "instance", 1, 1)
    for _ in range(runs):
        transaction, tracker = kernel.transaction, kernel.tracker
        start = time.perf_counter()
        for _ in range(core_ops // 2):
            with transaction():
                tracker.add(cnode, 1048576, "capture", 4242, 4243)
            with transaction():
                tracker.sub(cnode, 1048576, "capture")
        core.append(core_ops / (time.perf_counter() - start))
    kernel.shutdown()
    r.raw["throughput"] = {"pipelined": single, "four_clients": four, "request_reply": rr, "core": core,
                           "ops_per_run": {"pipelined": pipelined_ops, "four_clients": 4 * worker_ops,
                                           "request_reply": rr_ops, "core": core_ops}}
    note = "an op is one request: named add or matching sub"
    r.add("3", "throughput: 1 pipelined client", summary(single), "ops/s", ">= 50k", lambda v: v >= 50_000, note)
    r.add("3", "throughput: 4 pipelined clients together", summary(four), "ops/s", ">= 80k",
          lambda v: v >= 80_000, "4 processes, wall time first start to last end")
    r.add("3", "throughput: request-reply, 1 client", summary(rr), "ops/s", ">= 10k", lambda v: v >= 10_000)
    r.add("3", "throughput: in-process core", summary(core), "ops/s", ">= 300k", lambda v: v >= 300_000,
          "Kernel.transaction + Tracker.add/sub")


# -- 5. device-node round trip ------------------------------------------------------------------------

def bench_device(b: Bench, mnt: str) -> None:
    from vpu_sim import uapi
    from vpu_sim.apps.m2m import DECODER_CARD
    from vpu_sim.apps.v4l2 import CAPTURE, V4l2Device, find_node

    r = b.results
    logf = open(b.path("vpu_sim.log"), "wb")
    b.stack.callback(logf.close)
    proc = b.spawn([PY, "-m", "vpu_sim", "daemon", "--mount", mnt], stdout=logf, stderr=logf)
    dev_dir = os.path.join(mnt, "dev")
    wait_until(lambda: os.path.exists(os.path.join(dev_dir, "video0")) or proc.poll() is not None,
               20, "vpu_sim to register dev/video0")
    if proc.poll() is not None:
        raise RuntimeError(f"vpu_sim daemon exited {proc.returncode}: {open(b.path('vpu_sim.log')).read()}")
    rounds, per = (3, 50) if b.quick else (7, 150)
    changes = 4 if b.quick else 10
    small = os.path.join(mnt, SMALL_FILE)
    with V4l2Device(find_node(dev_dir, DECODER_CARD)) as dev:
        get = dev.get_control64
        cid = uapi.V4L2_CID_MEMORY_USAGE
        for _ in range(20):
            get(cid)
        read_loop(small, 20)
        ctrl_runs, small_runs, ratios = [], [], []
        now = time.perf_counter_ns
        for _ in range(rounds):
            times = []
            for _ in range(per):
                start = now()
                get(cid)
                times.append(now() - start)
            ctrl = statistics.median(times) / 1000
            small_us = statistics.median(read_loop(small, per)) / 1000
            ctrl_runs.append(ctrl)
            small_runs.append(small_us)
            ratios.append(ctrl / small_us)
        # Notify delay: REQBUFS allocates (or frees) the CAPTURE buffers; poll until the control moves.
        delays, polls_needed = [], []
        value = get(cid)
        for i in range(changes):
            count = 4 if i % 2 == 0 else 0
            start = time.perf_counter()
            dev.request_buffers(CAPTURE, count)
            polls = 0
            while True:
                polls += 1
                new = get(cid)
                if new != value:
                    break
                if time.perf_counter() - start > 5:
                    raise RuntimeError("V4L2_CID_MEMORY_USAGE did not change within 5 s of REQBUFS")
            delays.append((time.perf_counter() - start) * 1000)
            polls_needed.append(polls)
            value = new
        dev.request_buffers(CAPTURE, 0)
    stop_process(proc)
    r.raw["device"] = {"g_ext_ctrls_us": ctrl_runs, "small_file_us": small_runs, "ratio": ratios,
                       "notify_delay_ms": delays, "polls": polls_needed}
    r.add("5", "device: VIDIOC_G_EXT_CTRLS(MEMORY_USAGE) round trip", summary(ctrl_runs), "us",
          note="dev/video0 of `vpu_sim daemon`, forwarded over the driver socket")
    r.add("5", "device: G_EXT_CTRLS / small-file read", summary(ratios), "x",
          note=f"small-file on the same mount, interleaved: {statistics.median(small_runs):.0f} us")
    r.add("5", "device: REQBUFS -> control reflects it", summary(delays), "ms",
          f"<= {NOTIFY_DELAY_MS + 50} ms", lambda v: v <= NOTIFY_DELAY_MS + 50,
          note=f"notify delay {NOTIFY_DELAY_MS} ms; timed from issuing REQBUFS; alloc and free alternate")


def bench_decode(b: Bench) -> None:
    """A 1080p v4l2-ctl streaming decode (MMAP both queues) inside memtrackfs run, against the
    frames' display time at the daemon's 30 fps."""
    frames = 30 if b.quick else 90
    runs = 2 if b.quick else 4
    clip = b.path("1080p.h264")
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=1920x1080:rate=30", "-frames:v", str(frames), "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-f", "h264", clip], check=True)
    decode = (f"v4l2-ctl -d /dev/video0 --set-fmt-video-out=width=1920,height=1080,pixelformat=H264"
              f" --stream-out-mmap=8 --stream-mmap=8 --stream-from={clip} --stream-to=/dev/null 2>&1"
              f" | tr -cd '<' | wc -c")
    script = f"TIMEFORMAT=%R; for i in $(seq {runs}); do time ({decode}); done"
    done = subprocess.run([PY, "-m", "memtrackfs", "run", "--", "bash", "-c", script], cwd=TOP,
                          capture_output=True, text=True, timeout=600)
    counts = [int(line) for line in done.stdout.split()]
    seconds = [float(line) for line in done.stderr.split() if re.fullmatch(r"\d+\.\d+", line)]
    if done.returncode != 0 or len(seconds) != runs or counts != [frames] * runs:
        raise RuntimeError(f"v4l2-ctl decode failed (status {done.returncode}, frames {counts}): "
                           f"{done.stderr.strip()[-500:]}")
    display = frames / 30.0
    b.results.raw["decode"] = {"frames": frames, "seconds": seconds}
    b.results.add("6", f"decode: v4l2-ctl 1080p, {frames} frames", summary(seconds), "s",
                  note=f"display time {display:.1f} s at 30 fps; includes open, format, buffers, the drain")
    b.results.add("6", "decode: time / display time", summary([t / display for t in seconds]), "x",
                  note="1.0 is real time: the simulated firmware decodes at the daemon's --fps")


# -- 7. /proc inside `memtrackfs run` ---------------------------------------------------------------------

RUN_COMMANDS = {"ps -e": ["ps", "-e"], "pgrep": ["pgrep", "-x", "bash"], "lsof -n": ["lsof", "-n"]}
_FUSEPY = TOP / ".venv" / "fusepy-3.0.1"


def run_worker_main(host_ns: int, rounds: int) -> int:
    """Inside the run: each command alternately in the host's mount namespace and in this one;
    prints {command: [[host_s, run_s], ...]} as JSON."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    def in_host() -> None:
        if libc.setns(host_ns, 0x00020000) != 0:  # CLONE_NEWNS
            os._exit(99)

    times: dict[str, list[list[float]]] = {}
    for name, argv in RUN_COMMANDS.items():
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # warm both
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=in_host,
                       pass_fds=(host_ns,))
        pairs = []
        for _ in range(rounds if name != "lsof -n" else max(3, rounds // 3)):
            pair = []
            for preexec in (in_host, None):
                start = time.perf_counter()
                done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      preexec_fn=preexec, pass_fds=(host_ns,))
                pair.append(time.perf_counter() - start)
                if done.returncode not in (0, 1):  # lsof says 1 for files it could not stat
                    raise RuntimeError(f"{name} exited {done.returncode}")
            pairs.append(pair)
        times[name] = pairs
    print(json.dumps(times))
    return 0


def bench_run_proc(b: Bench) -> None:
    r = b.results
    rounds = 5 if b.quick else 15
    bindings = [("libfuse3", {})]
    if (_FUSEPY / "fuse.py").exists():
        bindings.append(("fusepy 3.0.1, libfuse2", {"MEMTRACKFS_FUSE": "fusepy", "PYTHONPATH": str(_FUSEPY)}))
    else:
        log(f"no {_FUSEPY}: the libfuse2 row is left out (scripts/test.sh installs fusepy 3.0.1 there)")
    host_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY)
    b.stack.callback(os.close, host_ns)
    os.set_inheritable(host_ns, True)
    for label, env in bindings:
        done = subprocess.run([PY, "-m", "memtrackfs", "run", "--no-vpu", "--", PY, str(Path(__file__).resolve()),
                               "--run-worker", str(host_ns), str(rounds)], cwd=TOP, capture_output=True,
                              text=True, pass_fds=(host_ns,), env={**os.environ, **env}, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"memtrackfs run ({label}) exited {done.returncode}: {done.stderr.strip()}")
        times = json.loads(done.stdout)
        r.raw[f"run_proc {label}"] = times
        for name, pairs in times.items():
            ratios = [run / host for host, run in pairs]
            host_ms = statistics.median(host for host, _ in pairs) * 1000
            run_ms = statistics.median(run for _, run in pairs) * 1000
            target = "<= 1.5x" if label == "libfuse3" else "-"
            check = (lambda v: v <= 1.5) if label == "libfuse3" else None
            r.add("7", f"run: {name} inside / on the host ({label})", summary(ratios), "x", target, check,
                  note=f"medians: host {host_ms:.1f} ms, inside the run {run_ms:.1f} ms")


# -- 8. fairness and memory under a flooding client ------------------------------------------------

FLOODER = r"""
import socket, sys, threading, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
until = time.monotonic() + float(sys.argv[2])
batch = b'{"id":7,"op":"heaps"}\n' * 2000
sent = [0]
def writer():
    while time.monotonic() < until:
        s.sendall(batch)
        sent[0] += 2000
threading.Thread(target=writer, daemon=True).start()
got = s.recv(1 << 20).count(b"\n")
print("flooding", flush=True)
while time.monotonic() < until or got < sent[0]:
    got += s.recv(1 << 20).count(b"\n")
print(got, flush=True)
"""


def fragment_cma(client: RawClient, buffers: int = 4000) -> None:
    """Every other page of the CMA heap free: a `heaps` request then lists thousands of free
    ranges (about 1 ms of work for a reply of 300 bytes): a heavy request, cheap to send."""
    ids = [client.call("heap_alloc", heap="cma", bytes=4096)["buffer"] for _ in range(buffers)]
    for buffer in ids[::2]:
        client.call("put", buffer=buffer)


def round_trips_ms(client: RawClient, node: int, seconds: float, every: float = 0.02) -> list[float]:
    """Latencies of request-reply exchanges due every ``every`` seconds (50 a second, as a driver's
    calls for a 30 fps stream), each counted from when it was due: one sent late because the
    previous reply was late waited that long too (asking only once the last answer came would
    sample the quiet moments far more often than the stalls)."""
    line = b'{"id":1,"op":"read","node":%d}\n' % node
    times, start = [], time.perf_counter()
    due = start
    while due - start < seconds:
        time.sleep(max(0.0, due - time.perf_counter()))
        client.request_reply([line], 1)
        times.append((time.perf_counter() - due) * 1000)
        due += every
    return times


def bench_flood(b: Bench) -> None:
    """One client floods (pipelined `heaps`, read as fast as it can) while another makes
    request-reply exchanges; then a client that never reads its replies pipelines `roots` with
    large replies. The long-running variant of tests/test_faults.py's flood tests."""
    import psutil

    r = b.results
    runs, seconds = (3, 3.0) if b.quick else (5, 10.0)
    _, sock, pid = b.mount_memtrackfs("flood")
    daemon = psutil.Process(pid)
    setup, other = RawClient(sock), RawClient(sock)
    fragment_cma(setup)
    node = other.call("root", name="other")["node"]
    quiet, flooded, p95, served = [], [], [], []
    for _ in range(runs):
        quiet.append(statistics.median(round_trips_ms(other, node, 1.0)))
        flooder = b.spawn([PY, "-c", FLOODER, sock, str(seconds)], stdout=subprocess.PIPE, text=True)
        if flooder.stdout.readline() != "flooding\n":
            raise RuntimeError("the flooding client did not start")
        times = round_trips_ms(other, node, seconds * 0.8)
        flood_replies = int(flooder.stdout.readline())
        flooder.wait(30)
        flooded.append(statistics.median(times))
        p95.append(sorted(times)[int(len(times) * 0.95)])
        served.append(flood_replies / seconds)
    # A client that never reads: 300 roots with 200-character names make each `roots` reply 70 KB.
    for i in range(300):
        setup.call("root", name=f"{i:04d}".ljust(200, "x"))
    rss_growth = []
    for _ in range(runs):
        rss = daemon.memory_info().rss
        hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        hog.connect(sock)
        hog.setblocking(False)
        sent, until = 0, time.monotonic() + seconds
        while time.monotonic() < until:
            try:
                hog.send(b'{"id":7,"op":"roots"}\n' * 100)
                sent += 100
            except BlockingIOError:
                round_trips_ms(other, node, 0.05)  # the daemon stopped reading it; others are served
        rss_growth.append((daemon.memory_info().rss - rss) / (1 << 20))
        hog.close()
        wait_until(lambda: daemon.num_fds() <= 12, 10, "the hog's connection to close")
    setup.close()
    other.close()
    r.raw["flood"] = {"quiet_ms": quiet, "flooded_ms": flooded, "p95_ms": p95, "flood_replies_per_s": served,
                      "rss_growth_mib": rss_growth, "seconds": seconds}
    r.add("8", "flood: another client's round trip, median", summary(flooded), "ms", "<= 50 ms",
          lambda v: v <= 50, f"request-reply `read` while a client pipelines `heaps` for {seconds:g} s")
    r.add("8", "flood: another client's round trip, p95", summary(p95), "ms")
    r.add("8", "flood: the same without the flood", summary(quiet), "ms")
    r.add("8", "flood: the flooding client's replies", summary(served), "ops/s", note="`heaps` on a fragmented CMA heap")
    r.add("8", "flood: daemon RSS growth, client never reads", summary(rss_growth), "MiB", "<= 48 MiB",
          lambda v: v <= 48, f"pipelined `roots` (70 KB replies) for {seconds:g} s, none read")


# -- report ---------------------------------------------------------------------------------------------

def machine_facts() -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    fuse3 = subprocess.run(["pkg-config", "--modversion", "fuse3"], capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "-C", str(TOP), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(TOP), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "libfuse3": fuse3 or "?",
            "loadavg_at_start": os.getloadavg(),
            "commit": head.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")}


def print_table(results: Results, machine: dict[str, Any], command: str, elapsed: float) -> None:
    rows = [("#", "figure", "target", "measured: median [min..max, n runs]", "met")]
    for fig in results.figures:
        measured = fmt_summary(fig["measured"], fig["unit"]) if fig["measured"] else fig["note"]
        met = "-" if fig["met"] is None else ("yes" if fig["met"] else "NO")
        rows.append((fig["number"], fig["figure"], fig["target"], measured, met))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    print(f"memtrackfs bench: {command}")
    print(f"machine: {machine['nproc']} CPUs, {machine['cpu']}, kernel {machine['kernel']}, "
          f"Python {machine['python']}, libfuse3 {machine['libfuse3']}, load {machine['loadavg_at_start'][0]:.2f} "
          f"at start; commit {machine['commit']}")
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("notes:")
    for fig in results.figures:
        if fig["note"] and fig["measured"]:
            print(f"  {fig['figure']}: {fig['note']}")
    print(f"total {elapsed:.0f} s")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: fewer runs, trees up to 100k")
    parser.add_argument("--json", metavar="FILE", help="write every figure and run to FILE")
    parser.add_argument("--only", metavar="LIST", default="small,device,throughput,tree,decode,run,flood",
                        help="comma-separated sections: small,device,throughput,tree,decode,run,flood (default: all)")
    parser.add_argument("--worker", nargs=2, metavar=("SOCKET", "OPS"), help=argparse.SUPPRESS)
    parser.add_argument("--run-worker", nargs=2, type=int, metavar=("HOST_NS_FD", "ROUNDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker[0], int(args.worker[1]))
    if args.run_worker:
        return run_worker_main(*args.run_worker)
    if os.geteuid() != 0:
        log("not root: FUSE mounts may fail and tmpfs falls back to /dev/shm")
    sections = set(args.only.split(","))
    command = "scripts/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    machine = machine_facts()
    bench = Bench(args.quick)
    started = time.monotonic()
    try:
        r = bench.results
        ours = sock = None
        if sections & {"small", "device", "throughput"}:
            ours, sock, _ = bench.mount_memtrackfs("ours")
        for name, number, title, run in (
                ("small", "1", "small-file latency", lambda: bench_small_file(bench, ours)),
                ("device", "5", "device-node round trip", lambda: bench_device(bench, ours)),
                ("throughput", "3", "allocation throughput", lambda: bench_throughput(bench, sock)),
                ("tree", "2", "tree scale and memory", lambda: bench_tree_and_memory(bench)),
                ("decode", "6", "V4L2 decode with v4l2-ctl", lambda: bench_decode(bench)),
                ("run", "7", "/proc inside memtrackfs run", lambda: bench_run_proc(bench)),
                ("flood", "8", "fairness and memory under a flood", lambda: bench_flood(bench))):
            if name not in sections:
                continue
            log(f"{title} ...")
            t0 = time.monotonic()
            try:
                run()
            except Exception as exc:
                r.failed(number, title, f"{type(exc).__name__}: {exc}")
                log(f"{title} FAILED: {exc!r}")
            log(f"{title}: {time.monotonic() - t0:.1f} s")
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc or 'Ctrl-C'}): cleaning up")
        bench.close()
        return 130
    bench.close()
    elapsed = time.monotonic() - started
    order = {"1": 0, "2": 1, "3": 2, "4": 3, "5": 4, "6": 5, "7": 6, "8": 7}
    bench.results.figures.sort(key=lambda fig: order[fig["number"]])
    print_table(bench.results, machine, command, elapsed)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": command, "machine": machine, "quick": args.quick, "elapsed_s": elapsed,
                       "figures": bench.results.figures, "raw": bench.results.raw,
                       "errors": bench.results.errors}, f, indent=1, default=str)
    return 1 if bench.results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
