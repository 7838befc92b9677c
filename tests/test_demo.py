"""The README's first command: scripts/demo.sh starts the board and the workload, its hints work
as printed, the commands are on PATH after it; --stop ends it."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import psutil
from helpers import ROOT

from memtrackfs.mounts import find_mount


def test_demo_starts_the_default_workload_and_its_hints_work(tmp_path: Path) -> None:
    mnt = tmp_path / "board"
    demo = ROOT / "scripts" / "demo.sh"
    try:
        done = subprocess.run(["bash", str(demo), str(mnt)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert out.count("  instance (tgid=") == 3  # two decoders and an encoder
        assert re.search(r"^Total: [1-9]\d* KiB$", out, re.M)  # the exported display buffers
        usages = re.findall(r"^  (play1|play2|encode) .* memory usage (\d+) bytes$", out, re.M)
        assert [name for name, _ in usages] == ["play1", "play2", "encode"]
        assert all(int(usage) > 0 for _, usage in usages)
        # The demo ran install.sh as root: the commands are on PATH, linked to this clone's venv.
        for command in ("memtrackfs", "vpu-sim"):
            assert os.path.realpath(shutil.which(command)) == os.path.realpath(ROOT / ".venv/bin" / command)
        # The hints it prints, run as printed: one more decoder fits, and snapshot reads the board.
        hints = dict(re.findall(r"^  ((?:vpu-sim|memtrackfs) \w+) (.*?)(?:\s+#.*)?$", out, re.M))
        assert set(hints) == {"vpu-sim play", "memtrackfs snapshot"}, out
        play = subprocess.run(f"vpu-sim play {hints['vpu-sim play']}".replace("--seconds 5", "--seconds 1"),
                              shell=True, capture_output=True, text=True, timeout=60)
        assert play.returncode == 0, play.stderr
        assert play.stdout.splitlines()[-1].endswith("memory usage 72733056 bytes")
        snap = subprocess.run(f"memtrackfs snapshot {hints['memtrackfs snapshot']}", shell=True,
                              capture_output=True, text=True, timeout=60)
        assert snap.returncode == 0 and snap.stdout.count("amphion-vpu/instance[") >= 3, snap.stderr
    finally:
        subprocess.run(["bash", str(demo), "--stop", str(mnt)], capture_output=True, timeout=60)
    assert find_mount(str(mnt)) is None
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(mnt) in " ".join(p.info["cmdline"] or [])]
