"""memtrackfs snapshot / diff / record / plot, on a board running a real workload."""
from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from memtrackfs.testing.helpers import Mount, memtrackfs, wait_for
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
