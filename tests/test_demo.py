"""The README's first command: scripts/demo.sh starts the board and the workload; --stop ends it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import psutil
from helpers import ROOT

from memtrackfs.mounts import find_mount


def test_demo_starts_the_default_workload_and_stops_cleanly(tmp_path: Path) -> None:
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
    finally:
        subprocess.run(["bash", str(demo), "--stop", str(mnt)], capture_output=True, timeout=60)
    assert find_mount(str(mnt)) is None
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(mnt) in " ".join(p.info["cmdline"] or [])]
