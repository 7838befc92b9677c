"""Fixtures: real memtrackfs mounts in temp dirs, and a check that no test leaves any behind."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional

import psutil
import pytest

from memtrackfs.client import MemtrackClient
from memtrackfs.mounts import read_mounts

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"


def memtrackfs(*args: str, env: Optional[dict[str, str]] = None, check: bool = True,
               timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the memtrackfs command as a user would (a separate process)."""
    return subprocess.run([sys.executable, "-m", "memtrackfs", *args], capture_output=True,
                          env=env, check=check, timeout=timeout)


class Mount:
    """A live memtrackfs mount: its mount point, its socket, and helpers to use both."""

    def __init__(self, path: Path, socket: Path) -> None:
        self.path = path
        self.socket = socket

    def __truediv__(self, relative: str) -> Path:
        return self.path / relative

    def read(self, relative: str) -> bytes:
        with open(self.path / relative, "rb") as f:
            return f.read()

    def kmsg(self) -> list[str]:
        """dev/kmsg's records, read with cat (one record per read(), as the kernel's device does)."""
        done = subprocess.run(["cat", str(self.path / "dev/kmsg")], capture_output=True, check=True)
        return done.stdout.decode().splitlines()

    def client(self, **kwargs) -> MemtrackClient:
        return MemtrackClient(str(self.socket), **kwargs)

    def umount(self) -> None:
        if any(m.mountpoint == str(self.path) for m in read_mounts()):
            memtrackfs("umount", str(self.path))


def start_mount(base: Path, env: Optional[dict[str, str]] = None) -> Mount:
    mount = Mount(base / "mnt", base / "driver.sock")
    memtrackfs("mount", str(mount.path), "--socket", str(mount.socket), env=env)
    return mount


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    m = start_mount(tmp_path)
    try:
        yield m
    finally:
        m.umount()


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
