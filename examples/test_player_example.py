import subprocess
import sys


def test_player_frees_everything(vpu_board):
    play = [sys.executable, "-m", "vpu_sim", "play", "--mount", str(vpu_board.path), "--seconds", "1"]
    subprocess.run(play + ["--export-to", "display-subsystem"], check=True)
    tree = vpu_board.tree("amphion-vpu")
    assert "fw [leaf]" in tree and "  instance " not in tree
    assert vpu_board.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n"
