"""The pytest plugin, used as a user would: pytest run on the README's example test file."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT

from memtrackfs.mounts import read_mounts

FAILING = '''
def test_fails_after_mounting(vpu_board):
    assert (vpu_board / "dev/video0").exists()
    raise AssertionError("on purpose")
'''


def run_pytest(path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path),
                           "--basetemp", str(tmp_path / "base")], capture_output=True, text=True, timeout=120)


def test_the_readme_example_passes(tmp_path: Path) -> None:
    done = run_pytest(ROOT / "examples/test_player_example.py", tmp_path)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


def test_a_failing_test_still_tears_everything_down(tmp_path: Path) -> None:
    test_file = tmp_path / "test_fails.py"
    test_file.write_text(FAILING)
    done = run_pytest(test_file, tmp_path)
    assert done.returncode == 1 and "on purpose" in done.stdout
    assert not [m for m in read_mounts() if m.mountpoint.startswith(str(tmp_path))]
