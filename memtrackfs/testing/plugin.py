"""pytest plugin (entry point ``pytest11``): a fresh memtrackfs, and vpu_sim on it, per test.

    def test_my_player_frees_its_buffers(vpu_board):
        subprocess.run(["my-player", "--device", str(vpu_board / "dev/video0")], check=True)
        assert "instance" not in vpu_board.tree()
        assert vpu_board.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\\n"

Fixtures (each torn down even when the test fails):
- ``memtrackfs_mount``: a ``memtrackfs.testing.helpers.Mount`` in the test's temp dir (``.path``,
  ``.socket``, ``/ "proc/rk_dmabuf/size"``, ``.read()``, ``.tree()``, ``.kmsg()``, ``.client()``).
- ``vpu_board``: the same mount with ``vpu-sim daemon`` serving dev/video0 and dev/video1.
  Mark a test ``@pytest.mark.vpu_board(board="imx8qm", fps=60)`` to change the daemon's options.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from memtrackfs.testing.helpers import Mount, start_mount, start_vpu_sim, stop_process


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vpu_board(board, fps, allocator): options of the vpu_board fixture's daemon")


@pytest.fixture
def memtrackfs_mount(tmp_path: Path) -> Iterator[Mount]:
    """A fresh memtrackfs mounted in the test's temp dir; unmounted afterwards."""
    mount = start_mount(tmp_path)
    try:
        yield mount
    finally:
        mount.umount()


@pytest.fixture
def vpu_board(request: pytest.FixtureRequest, memtrackfs_mount: Mount) -> Iterator[Mount]:
    """A fresh memtrackfs with vpu-sim daemon serving dev/video0 (decoder) and dev/video1 (encoder)."""
    marker = request.node.get_closest_marker("vpu_board")
    options = marker.kwargs if marker else {}
    args = [arg for key, value in options.items() for arg in (f"--{key}", str(value))]
    daemon = start_vpu_sim(memtrackfs_mount, *args)
    try:
        yield memtrackfs_mount
    finally:
        stop_process(daemon)
