"""memtrackfs snapshot / diff / record / plot, on a board running a real workload."""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from helpers.board_files import MEMTRACK, X_BYTES, write_board

from memtrackfs.testing.helpers import Mount, memtrackfs, wait_for
from memtrackfs.tools import record as record_tool
from memtrackfs.tools import snapshot as snapshot_tool
from memtrackfs.tools.parse import parse_memtrack

RING = "bitstream-ring-buffer"


def snapshot(board: Mount, out: Path) -> dict:
    done = memtrackfs("snapshot", "--mount", str(board.path), "--json")
    out.write_bytes(done.stdout)
    return json.loads(done.stdout)


def start_player(board: Mount, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vpu_sim", "play", "--mount", str(board.path),
                             "--seconds", str(seconds), "--export-to", "display-subsystem"],
                            stdout=subprocess.DEVNULL)


def test_snapshot_and_diff_show_what_grew(vpu_board: Mount, tmp_path: Path) -> None:
    idle = snapshot(vpu_board, tmp_path / "idle.json")
    assert idle["trackers"]["amphion-vpu"]["total"] == 44040192  # fw + rpc of both cores
    assert idle["dmabuf"]["size_kib"] == 0

    player = start_player(vpu_board, 3)
    try:
        wait_for(lambda: vpu_board.read("proc/rk_dmabuf/size") != b"Total: 0 KiB\n", what="exports")
        busy = snapshot(vpu_board, tmp_path / "busy.json")
    finally:
        player.wait(30)
    instance = f"amphion-vpu/instance[{player.pid}/{player.pid}]"
    node = busy["trackers"]["amphion-vpu"]["nodes"][instance]
    assert node["leaves"]["mbi"] == [7, 7 * 917504] and node["leaves"][RING] == [1, 12582912]
    assert busy["processes"][str(player.pid)]["dmabuf_kib"] > 0

    grew = memtrackfs("diff", str(tmp_path / "idle.json"), str(tmp_path / "busy.json"), check=False)
    assert grew.returncode == 1  # like diff(1): differences (here: growth) found
    text = grew.stdout.decode()
    assert f"  {instance}: +" in text and "(new)" in text
    assert "mbi [leaf] x0 -> x7, bytes +6422528 (0 -> 6422528)" in text
    assert "dma-buf: size KiB +" in text and "videobuf2_dma_co" in text
    assert f"process {player.pid}: tracked bytes +" in text

    done = snapshot(vpu_board, tmp_path / "done.json")
    assert done["trackers"] == idle["trackers"] and done["dmabuf"]["size_kib"] == 0
    back = memtrackfs("diff", str(tmp_path / "idle.json"), str(tmp_path / "done.json"))
    assert back.returncode == 0 and back.stdout == b"no change\n"


def test_snapshot_text_matches_the_file(vpu_board: Mount) -> None:
    total, _ = parse_memtrack(vpu_board.tree())
    text = memtrackfs("snapshot", "--mount", str(vpu_board.path)).stdout.decode()
    assert f"tracker amphion-vpu: {total} bytes" in text
    assert "fw x2 35651584" in text and "dma-buf: 0 KiB in 0 buffers" in text


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.vpu_board(fault="driver-leak:names=mbi+dcp")
def test_record_follows_each_instance_and_its_process_and_plot_draws_it(vpu_board: Mount, tmp_path: Path) -> None:
    record = tmp_path / "usage.jsonl"
    recorder = subprocess.Popen([sys.executable, "-m", "memtrackfs", "record", "--mount", str(vpu_board.path),
                                 "--interval", "0.1", "--duration", "60", "--out", str(record)],
                                stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: record.exists() and len(record.read_text().splitlines()) >= 3, what="first samples")
        player = start_player(vpu_board, 1)
        player.wait(30)
        vpu_board.settle()  # its instance is released (and, with the fault, left holding MBI and DCP)
        lines = len(record.read_text().splitlines())
        wait_for(lambda: len(record.read_text().splitlines()) >= lines + 3, what="samples after the exit")
    finally:
        recorder.send_signal(signal.SIGINT)  # Ctrl-C: the record ends cleanly
        recorder.wait(30)
    assert recorder.returncode == 0 and recorder.stdout.read().startswith("memtrackfs: ")
    head, *samples = [json.loads(line) for line in record.read_text().splitlines()]
    assert head["record"] == "memtrackfs" and head["version"] == 2 and head["root"] == str(vpu_board.path)
    mine = [inst for s in samples for inst in s["trackers"]["amphion-vpu"]["instances"] if inst["tgid"] == player.pid]
    assert mine and {inst["comm"] for inst in mine} == {mine[0]["comm"]} and mine[0]["comm"]
    assert max(inst["usage"] for inst in mine) == 72733056
    assert mine[0]["alive"] and not mine[-1]["alive"]  # seen running, then after its exit
    assert mine[-1]["usage"] == 7 * 917504 + 2 * 2040000  # what the leaky driver kept: the MBI and DCP
    assert max(s["dmabuf_kib"] for s in samples) > 0 and samples[-1]["peak_mib"] > 0
    png = tmp_path / "usage.png"
    memtrackfs("plot", str(record), "-o", str(png))
    assert png_size(png) == (1300, 780)  # two panels: the tracker's and the dma-bufs'

    # Without a dma-buf (and with the peak reset), no dma-buf panel.
    (vpu_board / "proc/rk_dmabuf/peak").write_text("0\n")
    quiet = tmp_path / "quiet.jsonl"
    memtrackfs("record", "--mount", str(vpu_board.path), "--interval", "0.1", "--duration", "0.3", "--out", str(quiet))
    memtrackfs("plot", str(quiet), "-o", str(png))
    assert png_size(png) == (1300, 420)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 1}\n')
    done = memtrackfs("plot", str(bad), "-o", str(png), check=False)
    assert (done.returncode, done.stderr.decode()) == (
        2, f"memtrackfs: plot: {bad} is not a memtrackfs record (make one with `memtrackfs record`)\n")



def test_snapshot_of_a_board_with_names_that_look_like_fields(tmp_path: Path) -> None:
    """Files as a board's kernel prints them for names memtrackfs would refuse: each read from the
    end of its lines (fixed format), so no depth, owner or leaf is misread; a file that cannot be
    read is skipped with a warning, never a traceback."""
    write_board(tmp_path)
    (tmp_path / MEMTRACK / "broken").write_text("Total memory usage: 1 bytes\nnot a node line\n")
    done = memtrackfs("snapshot", "--mount", str(tmp_path), "--json", check=False)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr
    assert done.stderr.decode().startswith(f"memtrackfs: snapshot: {MEMTRACK}/broken skipped: malformed")
    snap = json.loads(done.stdout)
    tree = snap["trackers"]["amphion-vpu"]["nodes"]
    instance = "amphion-vpu/instance[2001/2001]"
    assert list(tree) == ["amphion-vpu", "amphion-vpu/  b[3003/3003]", instance,
                          f"{instance}/fw [leaf][2001/2001]", f"{instance}/x (tgid=666, pid=666)[2001/2001]"]
    assert tree["amphion-vpu"]["leaves"] == {"fw": [1, 33554432]}
    assert tree[instance]["leaves"] == {"usage: 9": [1, 36868]}
    assert tree[f"{instance}/fw [leaf][2001/2001]"]["leaves"] == {"mbi": [1, 4096]}
    assert [node["depth"] for node in tree.values()] == [0, 1, 1, 2, 2]
    assert snap["trackers"]["x [leaf]"]["nodes"] == {"x [leaf]": {"depth": 0, "usage": 0, "tgid": 7, "pid": 7,
                                                                "leaves": {}}}
    assert snap["trackers"]["a\nb"]["total"] == 5 and list(snap["trackers"]["a\nb"]["nodes"]) == ["a\nb"]
    # Nobody is charged for what a name says: 666 holds nothing.
    assert snap["processes"] == {"7": {"tracked": 5, "dmabuf_kib": 0},
                                 "1000": {"tracked": 33554432, "dmabuf_kib": 0},
                                 "2001": {"tracked": 4096 + X_BYTES + 36868, "dmabuf_kib": 4},
                                 "3003": {"tracked": 4096, "dmabuf_kib": 0}}
    names = [buf["name"] for buf in snap["dmabuf"]["buffers"].values()]
    assert names == ["aééééééé\ufffd", "2001-player", "(null)"]
    assert [buf["exporter"] for buf in snap["dmabuf"]["buffers"].values()][1] == "sÿstème-heap-\ufffd"
    text = memtrackfs("snapshot", "--mount", str(tmp_path), check=False)
    assert text.returncode == 0 and "tracker a\\nb: 5 bytes" in text.stdout.decode(), text.stdout


def test_record_skips_roots_that_go_while_it_reads(mount: Mount, tmp_path: Path, monkeypatch) -> None:
    """A root destroyed after the open of its file and before the read (which then fails with EIO,
    as debugfs answers): record skips it and goes on. The reader here is slowed between its opens
    and its reads, so that roots created and destroyed without pause fall in that window."""
    stop = threading.Event()

    def churn() -> None:
        with mount.client() as c:
            while not stop.is_set():
                handles = [c.call("root", name=f"r{i}")["node"] for i in range(20)]
                for handle in handles:
                    c.call("destroy", node=handle)

    def slow_open(path: str, mode: str = "r") -> Any:
        f = open(path, mode)
        time.sleep(0.002)  # the window, not a wait for an event
        return f

    monkeypatch.setattr(snapshot_tool, "open", slow_open, raising=False)
    churner = threading.Thread(target=churn)
    churner.start()
    try:
        with open(tmp_path / "r.json", "w") as out:
            taken = record_tool.record(str(mount.path), 0.001, out, duration=2)
    finally:
        stop.set()
        churner.join()
    assert taken > 10


@pytest.mark.parametrize("content", [None, b"", b"not json", b"\xff\xfe", b"[]", b'{"trackers": []}',
                                     b'{"trackers": {"a": {"total": 1, "nodes": {"a": {"usage": "1"}}}}}',
                                     b'{"trackers": {}, "dmabuf": {"size_kib": 1}, "processes": {}}',
                                     b'{"trackers": {}, "dmabuf": null, "processes": {"x": 1}}'],
                         ids=["missing", "empty", "text", "binary", "list", "trackers-list", "node", "dmabuf",
                              "processes"])
def test_diff_of_a_file_that_is_no_snapshot_is_one_line_naming_it(tmp_path: Path, content: Optional[bytes]) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"trackers": {}, "dmabuf": None, "processes": {}}))
    if content is not None:
        bad.write_bytes(content)
    for before, after in ((good, bad), (bad, good)):
        done = memtrackfs("diff", str(before), str(after), check=False)
        error = done.stderr.decode()
        assert done.returncode == 2 and done.stdout == b"", error
        assert error.startswith(f"memtrackfs: diff: {bad}: ") and error.count("\n") == 1, error


def test_plot_without_matplotlib_says_how_to_install_it(tmp_path: Path) -> None:
    """memtrackfs is not on PyPI, so the hint names what is: matplotlib itself."""
    missing = tmp_path / "no-matplotlib" / "matplotlib"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    record = tmp_path / "usage.jsonl"
    record.write_text('{"record": "memtrackfs", "version": 2, "root": "/", "started": "x"}\n')
    env = dict(os.environ, PYTHONPATH=str(missing.parent))
    done = memtrackfs("plot", str(record), "-o", str(tmp_path / "usage.png"), env=env, check=False)
    assert (done.returncode, done.stderr.decode()) == (
        1, "memtrackfs: plot: needs matplotlib (the `plot` extra): pip install matplotlib\n")
