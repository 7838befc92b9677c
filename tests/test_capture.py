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

from memtrackfs.testing.helpers import Mount, memtrackfs, wait_for

CONTROL = "sys/kernel/debug/dynamic_debug/control"


def capture(mount: Mount, out: Path) -> dict[str, str]:
    done = memtrackfs("capture", "--mount", str(mount.path), "-o", str(out))
    assert done.stdout.decode().startswith(f"memtrackfs: captured ")
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
