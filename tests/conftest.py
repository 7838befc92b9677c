"""Fixtures: real memtrackfs mounts in temp dirs, and a check that no test leaves any behind."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from memtrackfs.mounts import read_mounts
from memtrackfs.testing import Mount, memtrackfs, start_mount  # noqa: F401  (the tests import them from here)

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak-seconds", type=float, default=float(os.environ.get("MEMTRACKFS_SOAK_SECONDS", "10")),
                     help="how long tests/test_soak.py runs its load (default $MEMTRACKFS_SOAK_SECONDS or 10; the issue's long run: 60)")


@pytest.fixture
def mount(memtrackfs_mount: Mount) -> Mount:
    """A fresh mount (the project's own pytest plugin provides it)."""
    return memtrackfs_mount


def _memtrackfs_mounts() -> set[str]:
    return {m.mountpoint for m in read_mounts() if m.fstype == "fuse.memtrackfs"}


def _memtrackfs_daemons() -> set[int]:
    pids = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any("memtrackfs" in part for part in cmdline) and "mount" in cmdline:
            pids.add(proc.info["pid"])
    return pids


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """The suite's last check: every mount and daemon a test started is gone."""
    mounts_before, daemons_before = _memtrackfs_mounts(), _memtrackfs_daemons()
    yield
    left_mounts = _memtrackfs_mounts() - mounts_before
    left_daemons = _memtrackfs_daemons() - daemons_before - {os.getpid()}
    assert not left_mounts, f"tests left memtrackfs mounts behind: {sorted(left_mounts)}"
    assert not left_daemons, f"tests left memtrackfs daemons behind: {sorted(left_daemons)}"
