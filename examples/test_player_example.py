import subprocess
import sys

from memtrackfs.testing import assert_no_leak

PLAY = [sys.executable, "-m", "vpu_sim", "play", "--seconds", "1"]


def test_player_frees_everything(vpu_board):
    before = vpu_board.snapshot()
    subprocess.run(PLAY + ["--mount", str(vpu_board.path), "--export-to", "display-subsystem"], check=True)
    vpu_board.settle()  # the player's file releases reach the driver after it exits: wait for them
    assert "  instance " not in vpu_board.tree()
    assert vpu_board.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n"
    assert_no_leak(before, vpu_board.snapshot())


def test_a_4k_decode_does_not_fit_in_a_small_cma_heap(memtrackfs_factory):
    board = memtrackfs_factory(board="imx8qxp", heaps=["system", "cma=64M"])
    done = subprocess.run(PLAY + ["--mount", str(board.path), "--size", "3840x2160"], capture_output=True, text=True)
    assert done.returncode == 1 and "Cannot allocate memory" in done.stderr


def test_the_driver_leak_scenario_is_a_leak(memtrackfs_scenario):
    result = memtrackfs_scenario("driver-leak")
    assert result.returncode == 0, result.errors
    # The decoder's MBI and DCP buffers stay behind after the player is gone: a leak of the driver.
    assert "amphion-vpu total: before 44040192 bytes, after 54542720 bytes (+10502528)" in result.summary
