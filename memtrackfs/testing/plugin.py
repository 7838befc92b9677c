"""pytest plugin (entry point ``pytest11``): fresh memtrackfs mounts, with vpu_sim on them, per test.

    def test_my_player_frees_its_buffers(vpu_board):
        before = vpu_board.snapshot()
        subprocess.run(["my-player", "--device", str(vpu_board / "dev/video0")], check=True)
        assert_no_leak(before, vpu_board.snapshot())   # snapshot() settles first

Fixtures (everything they start is torn down, even when the test fails):
- ``memtrackfs_factory``: ``memtrackfs_factory(board=None, heaps=None, driver_timeout=None,
  files=None, bsp=None, **vpu_sim_options)`` mounts a fresh memtrackfs in the test's temp dir and
  returns its ``memtrackfs.testing.helpers.Mount``; with a ``board`` (``"imx8qxp"``, ``"imx8qm"``:
  dev/video0 and dev/video1; ``"rk3588"``: dev/mpp_service), that board's ``vpu-sim daemon``
  serves its nodes. ``files``: the board profile of the mount's files (``memtrackfs mount
  --board``; default: ``"rk3588"`` for the rk3588, whose driver needs it, else every file, as
  ``memtrackfs run`` mounts by default); ``bsp``: rk3588's BSP (``"6.1"``). ``heaps`` as
  ``--heap`` takes them (``["system", "cma=64M"]``); ``fps=60``, ``allocator="dma-sg"``,
  ``fault=[...]`` go to the Amphion daemon.
- ``memtrackfs_mount``: a mount without a driver (``.path``, ``.socket``, ``/ "proc/..."``,
  ``.read()``, ``.tree()``, ``.kmsg()``, ``.client()``, ``.settle()``, ``.snapshot()``).
- ``vpu_board``: a mount with the daemon; ``@pytest.mark.vpu_board(board="imx8qm", fps=60)``
  changes its options.
- ``memtrackfs_scenario``: ``memtrackfs_scenario("driver-leak")`` plays a scenario (a built-in
  name or a file) on a fresh mount (of its board's files for an rk3588 one) and returns its
  result: ``.summary`` (what it printed), ``.returncode``, ``.mount`` (to look at what it left
  behind).

Options (command line, or ini keys in pytest.ini / pyproject.toml): ``--memtrackfs-board``
(``memtrackfs_board``, default imx8qxp), ``--memtrackfs-heap`` repeatable (``memtrackfs_heaps``,
one a line; default memtrackfs's own), ``--memtrackfs-driver-timeout`` (``memtrackfs_driver_timeout``,
seconds, default 5). Where FUSE cannot be used (no /dev/fuse, no libfuse2), the tests that ask
for these fixtures are skipped, saying why. Each test mounts in its own temp dir, so
``pytest -n`` (pytest-xdist) runs them side by side.
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol, Sequence

import pytest

from memtrackfs.model.boards import board as board_profile
from memtrackfs.testing.helpers import (
    Mount,
    fuse_unusable,
    start_mount,
    start_vpu_sim,
    vpu_sim_options,
)

DEFAULT_BOARD = "imx8qxp"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("memtrackfs", "memtrackfs fixtures (memtrackfs_factory, vpu_board, ...)")
    group.addoption("--memtrackfs-board", help=f"the board vpu_board emulates (default: the ini's memtrackfs_board, "
                                               f"else {DEFAULT_BOARD})")
    group.addoption("--memtrackfs-heap", action="append", metavar="NAME[=SIZE]",
                    help="a heap of every mount, repeatable, as `memtrackfs mount --heap` takes it")
    group.addoption("--memtrackfs-driver-timeout", type=float, metavar="S",
                    help="how long a device-node call waits for its driver (default 5)")
    parser.addini("memtrackfs_board", f"the board vpu_board emulates (default {DEFAULT_BOARD})", default=DEFAULT_BOARD)
    parser.addini("memtrackfs_heaps", "the heaps of every mount, one a line (NAME[=SIZE])", type="linelist", default=[])
    parser.addini("memtrackfs_driver_timeout", "seconds a device-node call waits for its driver", default="5")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers",
                            "vpu_board(board, fps, allocator, fault): options of the vpu_board fixture's daemon")


@dataclass(frozen=True)
class Defaults:
    board: str
    heaps: tuple[str, ...]
    driver_timeout: float


def _defaults(config: pytest.Config) -> Defaults:
    heaps = config.getoption("--memtrackfs-heap") or config.getini("memtrackfs_heaps")
    timeout = config.getoption("--memtrackfs-driver-timeout")
    return Defaults(config.getoption("--memtrackfs-board") or config.getini("memtrackfs_board"), tuple(heaps),
                    float(timeout if timeout is not None else config.getini("memtrackfs_driver_timeout")))


class MountFactory(Protocol):
    def __call__(self, *, board: Optional[str] = None, heaps: Optional[Sequence[str]] = None,
                 driver_timeout: Optional[float] = None, files: Optional[str] = None, bsp: Optional[str] = None,
                 **vpu_sim: Any) -> Mount: ...


@pytest.fixture
def memtrackfs_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MountFactory]:
    """Make fresh mounts (with a vpu-sim daemon when given a ``board``); all go at the test's end."""
    reason = fuse_unusable()
    if reason is not None:
        pytest.skip(f"memtrackfs: FUSE is not usable on this machine: {reason}")
    defaults = _defaults(request.config)
    made: list[Mount] = []

    def make(*, board: Optional[str] = None, heaps: Optional[Sequence[str]] = None,
             driver_timeout: Optional[float] = None, files: Optional[str] = None, bsp: Optional[str] = None,
             **vpu_sim: Any) -> Mount:
        base = tmp_path / f"memtrackfs-{len(made)}"
        base.mkdir()
        if files is None and board is not None and board_profile(board).vpu == "mpp":
            files = board  # the MPP driver serves only a mount of its own board
        options = ["--driver-timeout", str(driver_timeout if driver_timeout is not None else defaults.driver_timeout)]
        options += [*(["--board", files] if files is not None else []), *(["--bsp", bsp] if bsp is not None else [])]
        options += [f"--heap={heap}" for heap in (heaps if heaps is not None else defaults.heaps)]
        mount = start_mount(base, *options)
        made.append(mount)
        if board is not None:
            mount.driver = start_vpu_sim(mount, *vpu_sim_options(board=board, **vpu_sim))
        elif vpu_sim:
            raise TypeError(f"vpu-sim options {sorted(vpu_sim)} need a board")
        return mount

    try:
        yield make
    finally:
        for mount in reversed(made):
            mount.umount()


@pytest.fixture
def memtrackfs_mount(memtrackfs_factory: MountFactory) -> Mount:
    """A fresh memtrackfs mounted in the test's temp dir; unmounted afterwards."""
    return memtrackfs_factory()


@pytest.fixture
def vpu_board(request: pytest.FixtureRequest, memtrackfs_factory: MountFactory) -> Mount:
    """A fresh memtrackfs with vpu-sim daemon serving dev/video0 (decoder) and dev/video1 (encoder)."""
    marker = request.node.get_closest_marker("vpu_board")
    options = dict(marker.kwargs) if marker else {}
    options.setdefault("board", _defaults(request.config).board)
    return memtrackfs_factory(**options)


@dataclass(frozen=True)
class ScenarioResult:
    mount: Mount
    returncode: int
    summary: str   # what `vpu-sim scenario` printed: its readiness line, the view, the summary
    errors: str


class ScenarioPlayer(Protocol):
    def __call__(self, scenario: str, *, heaps: Optional[Sequence[str]] = None,
                 driver_timeout: Optional[float] = None, timeout: float = 300) -> ScenarioResult: ...


@pytest.fixture
def memtrackfs_scenario(memtrackfs_factory: MountFactory) -> ScenarioPlayer:
    """Play a scenario (``vpu-sim scenario``: its own driver and applications) on a fresh mount."""
    def play(scenario: str, *, heaps: Optional[Sequence[str]] = None, driver_timeout: Optional[float] = None,
             timeout: float = 300) -> ScenarioResult:
        from vpu_sim.scenario.library import (
            mount_board,  # only a scenario needs vpu_sim
        )
        mount = memtrackfs_factory(heaps=heaps, driver_timeout=driver_timeout, files=mount_board(scenario))
        done = subprocess.run([sys.executable, "-m", "vpu_sim", "scenario", scenario, "--mount", str(mount.path)],
                              capture_output=True, text=True, timeout=timeout)
        return ScenarioResult(mount, done.returncode, done.stdout, done.stderr)
    return play
