"""memtrackfs capture and load: a board's files into a JSON file, and back into a fresh mount,
where every file reads byte for byte the same but the kernel log (which load does not replay)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from helpers.rk3588 import hold_rk3588_state, release

from memtrackfs.testing.helpers import Mount, memtrackfs, wait_for

CONTROL = "sys/kernel/debug/dynamic_debug/control"


def capture(mount: Mount, out: Path) -> dict[str, str]:
    done = memtrackfs("capture", "--mount", str(mount.path), "-o", str(out))
    assert done.stdout.decode().startswith("memtrackfs: captured ")
    return json.loads(out.read_text())["files"]


def holder_pid(output: bytes) -> int:
    return int(re.search(rb"held by pid (\d+)", output).group(1))


def test_a_board_captured_and_loaded_into_a_fresh_mount_reads_the_same(memtrackfs_factory, tmp_path: Path) -> None:
    board: Mount = memtrackfs_factory(board="imx8qxp")
    player = subprocess.Popen([sys.executable, "-m", "vpu_sim", "play", "--mount", str(board.path), "--seconds", "60",
                               "--export-to", "display-subsystem"], stdout=subprocess.PIPE, text=True)
    hold = None
    try:
        wait_for(lambda: board.read("proc/rk_dmabuf/size") != b"Total: 0 KiB\n", what="exports")
        (board / "proc/rk_dmabuf/peak").write_text("0\n")  # a reset, then the buffers below
        with board.client() as client:
            buffers = [buf["buffer"] for buf in client.call("buffers")["buffers"]]
        # Two buffers get one reference more (a compositor); a system-heap buffer with a name of its
        # own; an 8 MiB one that comes and goes (the peak stays above the total).
        hold = subprocess.Popen([sys.executable, "-m", "vpu_sim", "hold", "--mount", str(board.path), "--seconds", "60",
                                 str(buffers[0]), str(buffers[-1])], stdout=subprocess.PIPE, text=True)
        assert hold.stdout.readline().startswith("holding 2 dma-bufs")
        extra = subprocess.Popen([sys.executable, "-c", "import sys; from memtrackfs.client import MemtrackClient; "
                                  "c = MemtrackClient(sys.argv[1]); c.call('heap_alloc', heap='system', bytes=3 << 20, "
                                  "name='camera meta'); b = c.call('heap_alloc', heap='cma', bytes=8 << 20)['buffer']; "
                                  "c.call('put', buffer=b); print('ok', flush=True); sys.stdin.read()", str(board.socket)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert extra.stdout.readline() == "ok\n"
        (board / CONTROL).write_text("func v4l2_memtrack_print_visitor +p\n")
        before = capture(board, tmp_path / "board.json")
        extra.stdin.close()
        extra.wait()
    finally:
        player.terminate()
        player.wait()
        if hold is not None:
            hold.terminate()
            hold.wait()
    assert len([p for p in before if p.startswith("sys/kernel/dmabuf/buffers/")]) == 2 * 10
    assert before["proc/rk_dmabuf/peak"] == "Peak: 42 MiB\n"  # 31.5 + 3 + 8

    fresh: Mount = memtrackfs_factory()
    loaded = memtrackfs("load", str(tmp_path / "board.json"), "--mount", str(fresh.path))
    text = loaded.stdout.decode()
    assert text.startswith(f"memtrackfs: loaded {tmp_path / 'board.json'} into {fresh.path}: tracker roots "
                           "amphion-vpu; 10 dma-bufs, 35328 KiB; held by pid "), text
    assert loaded.stderr == b""
    after = capture(fresh, tmp_path / "again.json")
    different = sorted(path for path in set(before) | set(after) if before.get(path) != after.get(path))
    assert different == ["dev/kmsg"]  # the kernel log is evidence, not replayed

    # The state lives as long as its holder.
    os.kill(holder_pid(loaded.stdout), signal.SIGTERM)
    wait_for(lambda: fresh.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n" and not os.listdir(
        fresh / "sys/kernel/debug/v4l2-memtrack"), what="the unload")


def test_an_rk3588_board_captured_and_loaded_reads_the_same_but_for_its_mpp_sessions(
        memtrackfs_factory, tmp_path: Path) -> None:
    board: Mount = memtrackfs_factory(files="rk3588", bsp="6.1")
    compositor = subprocess.Popen([sys.executable, "-m", "vpu_sim", "compositor", "--mount", str(board.path)],
                                  stdout=subprocess.PIPE, text=True)
    state = hold_rk3588_state(board)
    try:
        assert compositor.stdout.readline().startswith("compositing 11 dma-bufs, 65552 KiB")
        (board / "proc/mpp_service/timing_en").write_text("0\n")
        (board / "proc/mpp_service/load_interval").write_text("1000\n")
        (board / "proc/rk_dmabuf/peak").write_text("0\n")
        with board.client() as client:  # a peak above the buffers: a 40 MiB one came and went
            client.call("put", buffer=client.call("heap_alloc", heap="system", bytes=40 << 20)["buffer"])
        before = capture(board, tmp_path / "rk3588.json")
    finally:
        compositor.terminate()
        compositor.wait()
        release(state)
    assert "sys/kernel/debug/v4l2-memtrack" not in json.dumps(sorted(before))  # the board has none
    assert before["proc/mpp_service/sessions-summary"].count("session: pid=") == 1
    assert "-non dmabuf\n\tAlloc by (rkisp " in before["proc/rk_dma_heap/dma_heap_info"]
    assert before["proc/rk_dma_heap/dma_heap_info"] == before["sys/kernel/debug/rk_dma_heap/dma_heap_info"]
    assert "fdc38100.rkvdec-core      load:  42.50% utilization:  39.00%\n" in before["proc/mpp_service/load"]
    assert " 0x00000000ff" in before["proc/rk_dmabuf/sgt"]  # the camera buffer at the decoder's IOVA

    fresh: Mount = memtrackfs_factory(files="rk3588", bsp="6.1")
    loaded = memtrackfs("load", str(tmp_path / "rk3588.json"), "--mount", str(fresh.path))
    assert loaded.stdout.decode().startswith(f"memtrackfs: loaded {tmp_path / 'rk3588.json'} into {fresh.path}: "
                                             "tracker roots none; 15 dma-bufs, ")
    assert loaded.stderr.decode() == (
        "memtrackfs: load: proc/mpp_service/sessions-summary: the sessions (fdc38100.rkvdec-core 9216 KiB) are not "
        "made again (an MPP driver's, for the board's processes); their buffers are loaded, attached as captured\n")
    after = capture(fresh, tmp_path / "again.json")
    different = sorted(path for path in set(before) | set(after) if before.get(path) != after.get(path))
    assert different == ["dev/kmsg", "proc/mpp_service/sessions-summary"]  # see the README: not recreated
    assert after["proc/mpp_service/sessions-summary"] == ""
    os.kill(holder_pid(loaded.stdout), signal.SIGTERM)
    wait_for(lambda: fresh.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n"
             and fresh.read("proc/rk_dma_heap/dma_heap_info") == b"\nTotal : 0x0 (0 KiB)\n", what="the unload")


def test_a_capture_that_cannot_be_loaded_changes_nothing(memtrackfs_factory, tmp_path: Path) -> None:
    board: Mount = memtrackfs_factory(board="imx8qxp")
    capture(board, tmp_path / "board.json")
    data = json.loads((tmp_path / "board.json").read_text())
    data["files"]["sys/kernel/debug/dma_buf/bufinfo"] = "\nDma-buf Objects:\nsize\tflags\n"
    data["files"]["proc/rk_dmabuf/peak"] = "Peak: lots\n"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    fresh: Mount = memtrackfs_factory()
    done = memtrackfs("load", str(tmp_path / "bad.json"), "--mount", str(fresh.path), check=False)
    assert (done.returncode, done.stderr.decode()) == (2, "memtrackfs: load: proc/rk_dmabuf/peak: no number in "
                                                          "'Peak: lots\\n'\n")
    # Into the board itself: its tree is there already. Refused, and nothing of it stays behind.
    done = memtrackfs("load", str(tmp_path / "board.json"), "--mount", str(board.path), check=False)
    assert done.returncode == 1
    assert done.stderr.decode() == ("memtrackfs: load: the mount already has tracker roots amphion-vpu: load into a "
                                    "fresh mount (nothing was left loaded)\n")
    fresh.settle()
    assert fresh.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n"
    done = memtrackfs("load", str(tmp_path / "board.json"), "--mount", str(tmp_path), check=False)
    assert done.returncode == 1 and b"is not a memtrackfs mount point" in done.stderr
