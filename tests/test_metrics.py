"""memtrackfs metrics: the Prometheus text format, parsed with prometheus_client's own parser, on
a board with a workload; over HTTP; into a file for node_exporter; from a board's files alone; on
an RK3588 with its rk_dma_heap heaps and mpp_service sessions."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from helpers.rk3588 import (
    DECODER,
    RK_CMA_BYTES,
    RKISP_BYTES,
    SESSION_KIB,
    hold_rk3588_state,
    release,
)
from prometheus_client.parser import text_string_to_metric_families

from memtrackfs.testing.helpers import Mount, memtrackfs, wait_for
from memtrackfs.tools.parse import parse_memtrack

PLAYER_USAGE = 72733056  # a 1080p H.264 decode's instance (docs/spec/amphion-model.md)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, by name and sorted labels, as the Prometheus parser reads the text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def start_player(board: Mount) -> subprocess.Popen:
    player = subprocess.Popen([sys.executable, "-m", "vpu_sim", "play", "--mount", str(board.path), "--seconds", "60",
                               "--export-to", "display-subsystem"], stdout=subprocess.PIPE, text=True)
    assert player.stdout.readline().startswith("play 1920x1080 h264: ")
    return player


@pytest.mark.vpu_board(fault="driver-leak:names=mbi+dcp")
def test_metrics_show_every_figure_with_its_labels(vpu_board: Mount) -> None:
    subprocess.run([sys.executable, "-m", "vpu_sim", "play", "--mount", str(vpu_board.path),
                   "--seconds", "0.3"], capture_output=True, text=True, check=True)
    vpu_board.settle()  # the first player has exited; its instance is left behind (the fault)
    player = start_player(vpu_board)
    try:
        wait_for(lambda: f"tgid={player.pid}" in vpu_board.tree() and PLAYER_USAGE == usage_of(vpu_board, player.pid),
                 what="the player's instance")
        text = memtrackfs("metrics", "--mount", str(vpu_board.path)).stdout.decode()
        tree_total, _ = parse_memtrack(vpu_board.tree())
        comm = Path(f"/proc/{player.pid}/comm").read_text().strip()
    finally:
        player.terminate()
        player.wait()
    got = samples(text)
    assert got[("v4l2_memtrack_total_bytes", (("device", "amphion-vpu"),))] == tree_total
    pid = str(player.pid)
    assert got[("v4l2_memtrack_instance_bytes", (("device", "amphion-vpu"), ("n", "0"), ("node", "instance"),
                                                 ("pid", pid), ("process", comm), ("tgid", pid)))] == PLAYER_USAGE
    leaked = 7 * 917504 + 2 * 2040000  # the exited player's MBI and DCP: orphaned
    assert got[("v4l2_memtrack_orphaned_bytes", (("device", "amphion-vpu"),))] == leaked
    assert [labels for name, labels in got if name == "v4l2_memtrack_instance_bytes" and ("process", "") in labels]
    exported = 9 * 3670016  # the player's CAPTURE buffers, exported to the display (32256 KiB)
    assert got[("dmabuf_exporter_buffers", (("exporter", "videobuf2_dma_contig"),))] == 9
    assert got[("dmabuf_exporter_bytes", (("exporter", "videobuf2_dma_contig"),))] == exported
    assert got[("rk_dmabuf_size_bytes", ())] == exported
    assert got[("rk_dmabuf_peak_bytes", ())] == (exported >> 20) << 20
    heap = (("heap", "cma"),)
    assert got[("cma_heap_size_bytes", heap)] == 256 << 20
    assert got[("cma_heap_used_bytes", heap)] + got[("cma_heap_free_bytes", heap)] == 256 << 20
    assert 0 < got[("cma_heap_largest_free_range_bytes", heap)] <= got[("cma_heap_free_bytes", heap)]


def usage_of(board: Mount, pid: int) -> int:
    _, nodes = parse_memtrack(board.tree())
    return next((node.usage for node in nodes if node.depth == 1 and node.tgid == pid), 0)


def test_metrics_over_http_and_into_a_file(vpu_board: Mount, tmp_path: Path) -> None:
    out = tmp_path / "media.prom"
    memtrackfs("metrics", "--mount", str(vpu_board.path), "-o", str(out))
    assert samples(out.read_text())[("v4l2_memtrack_total_bytes", (("device", "amphion-vpu"),))] == 44040192
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".metrics-")]  # no temporary left
    server = subprocess.Popen([sys.executable, "-m", "memtrackfs", "metrics", "--mount", str(vpu_board.path),
                               "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith(f"memtrackfs: metrics of {vpu_board.path} on http://127.0.0.1:"), server.stderr.read()
        url = line.split(" on ", 1)[1].strip()
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        assert samples(body)[("rk_dmabuf_size_bytes", ())] == 0
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(10) == 0


def test_metrics_from_a_board_s_files_alone(vpu_board: Mount, tmp_path: Path) -> None:
    """A root with only Rockchip's files (no debugfs, no sysfs stats): the exporters come from
    rk_dmabuf/dev, cut at 16 characters as it shows them."""
    player = start_player(vpu_board)
    try:
        wait_for(lambda: vpu_board.read("proc/rk_dmabuf/size") != b"Total: 0 KiB\n", what="exports")
        board = tmp_path / "board"
        (board / "proc/rk_dmabuf").mkdir(parents=True)
        for name in ("size", "peak", "dev", "sgt"):  # read(), as cat does: a procfs file's size is 0
            (board / "proc/rk_dmabuf" / name).write_bytes((vpu_board / "proc/rk_dmabuf" / name).read_bytes())
    finally:
        player.terminate()
        player.wait()
    got = samples(memtrackfs("metrics", "--mount", str(board)).stdout.decode())
    assert got[("dmabuf_exporter_buffers", (("exporter", "videobuf2_dma_co"),))] == 9
    assert not [name for name, _ in got if name.startswith(("v4l2_memtrack", "cma_heap"))]
    (board / "proc/rk_dmabuf/peak").write_text("")  # what shutil.copy makes of it (sendfile of size 0)
    done = memtrackfs("metrics", "--mount", str(board), check=False)
    assert (done.returncode, done.stderr.decode()) == (2, f"memtrackfs: metrics: {board}/proc/rk_dmabuf/peak: "
                                                          "no number in ''\n")


@pytest.mark.parametrize("bsp", ["5.10", "6.1"])
def test_metrics_of_an_rk3588_its_heaps_and_mpp_sessions(memtrackfs_factory, bsp: str) -> None:
    board: Mount = memtrackfs_factory(files="rk3588", bsp=bsp)
    holder = hold_rk3588_state(board)
    try:
        if bsp == "6.1":
            (board / "proc/mpp_service/load_interval").write_text("1000\n")
        got = samples(memtrackfs("metrics", "--mount", str(board.path)).stdout.decode())
    finally:
        release(holder)
    device = (("device", DECODER),)
    assert got[("mpp_service_session_bytes", device)] == SESSION_KIB << 10
    # Only the 6.1 BSP lists the sessions themselves, and the cores' load.
    assert got.get(("mpp_service_sessions", device)) == (1 if bsp == "6.1" else None)
    assert got.get(("mpp_service_core_load_ratio", (("core", DECODER),))) == (0.425 if bsp == "6.1" else None)
    assert got.get(("mpp_service_core_utilization_ratio", (("core", DECODER),))) == (0.39 if bsp == "6.1" else None)
    rk_cma = (("heap", "rk-dma-heap-cma"),)
    assert got[("rk_dma_heap_buffers", rk_cma)] == 2
    assert got[("rk_dma_heap_buffer_bytes", rk_cma)] == RK_CMA_BYTES
    assert got[("rk_dma_heap_contig_bytes", (("heap", "rk-dma-heap-cma"), ("owner", "rkisp")))] == RKISP_BYTES
    assert got[("rk_dma_heap_total_bytes", ())] == RK_CMA_BYTES + RKISP_BYTES
    # alloc_bitmap on a Rockchip BSP is its rk_dma_heap CMA heap's: 32 MiB by default
    assert got[("cma_heap_size_bytes", rk_cma)] == 32 << 20
    assert got[("cma_heap_used_bytes", rk_cma)] == RK_CMA_BYTES + RKISP_BYTES
    assert got[("dmabuf_exporter_bytes", (("exporter", "system"),))] == 5 << 20
    assert got[("dmabuf_exporter_bytes", (("exporter", "drm"),))] == 2 << 20
    assert not [name for name, _ in got if name.startswith("v4l2_memtrack")]  # the board has none
    board.settle()  # the holder's end: its session and buffers are gone
    got = samples(memtrackfs("metrics", "--mount", str(board.path)).stdout.decode())
    assert not [name for name, _ in got if name in ("mpp_service_session_bytes", "rk_dma_heap_buffers")]
    assert got[("rk_dma_heap_total_bytes", ())] == 0
