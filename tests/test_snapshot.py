"""memtrackfs snapshot / diff / record / plot, on a board running a real workload."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_record_and_plot(vpu_board: Mount, tmp_path: Path) -> None:
    record = tmp_path / "usage.jsonl"
    player = start_player(vpu_board, 1.5)
    try:
        memtrackfs("record", "--mount", str(vpu_board.path), "--interval", "0.2", "--duration", "2.5",
                   "--out", str(record))
    finally:
        player.wait(30)
    samples = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(samples) >= 8 and samples[0]["t"] < samples[-1]["t"]
    peak_usage = max(s["instances"].get(f"amphion-vpu/instance[{player.pid}/{player.pid}]", 0) for s in samples)
    assert peak_usage == 72733056
    assert max(s["dmabuf_kib"] for s in samples) > 0 and samples[-1]["peak_mib"] > 0
    png = tmp_path / "usage.png"
    memtrackfs("plot", str(record), "-o", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000
