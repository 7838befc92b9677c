"""Fixtures: real memtrackfs mounts in temp dirs, and a check that no test leaves any behind."""
from __future__ import annotations

import os
from typing import Iterator

import psutil
import pytest

from memtrackfs.mounts import SOURCE_PREFIX, read_mounts
from memtrackfs.testing.helpers import Mount


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak-seconds", type=float, default=float(os.environ.get("MEMTRACKFS_SOAK_SECONDS", "10")),
                     help="how long tests/test_soak.py runs its load (default $MEMTRACKFS_SOAK_SECONDS or 10; the issue's long run: 60)")
    parser.addoption("--settle-runs", type=int, default=int(os.environ.get("MEMTRACKFS_SETTLE_RUNS", "20")),
                     help="how many times tests/test_settle.py runs the player and checks the tree after settle "
                          "(default $MEMTRACKFS_SETTLE_RUNS or 20; the long check: 1000)")


@pytest.fixture
def mount(memtrackfs_mount: Mount) -> Mount:
    """A fresh mount (the project's own pytest plugin provides it)."""
    return memtrackfs_mount


def _ours(path: str, places: tuple[str, ...]) -> bool:
    return any(path == place or path.startswith(place + "/") for place in places)


def _memtrackfs_mounts(places: tuple[str, ...]) -> set[str]:
    return {m.mountpoint for m in read_mounts()
            if (m.fstype == "fuse.memtrackfs" and (_ours(m.mountpoint, places)
                                                   or _ours(m.source[len(SOURCE_PREFIX):], places)))
            or (m.fstype == "fuse.memtrackfs-proc" and _ours(m.mountpoint, places))}  # a run's /proc


def _memtrackfs_daemons(places: tuple[str, ...]) -> set[int]:
    pids = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if (any("memtrackfs" in part for part in cmdline)
                and ("mount" in cmdline or "memtrackfs.sandbox.proc_union" in cmdline)
                and any(_ours(part, places) for part in cmdline)):
            pids.add(proc.info["pid"])
    return pids


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite's last check: every mount and daemon this suite started is gone.

    The suite's sockets, logs and run directories go to a runtime directory of its own
    (``$MEMTRACKFS_RUNTIME_DIR``), so that what another suite on the machine mounts is not counted.
    """
    runtime = tmp_path_factory.mktemp("runtime", numbered=False)
    os.environ["MEMTRACKFS_RUNTIME_DIR"] = str(runtime)
    places = (str(tmp_path_factory.getbasetemp()), str(runtime))
    yield
    left_mounts = _memtrackfs_mounts(places)
    left_daemons = _memtrackfs_daemons(places) - {os.getpid()}
    assert not left_mounts, f"tests left memtrackfs mounts behind: {sorted(left_mounts)}"
    assert not left_daemons, f"tests left memtrackfs daemons behind: {sorted(left_daemons)}"
