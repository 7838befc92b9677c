"""settle: after an application exits, its releases (FUSE sends them in the background) and its
connection's end are processed before ``settle`` returns; then the tree is back, every time."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memtrackfs.client import MemtrackError
from memtrackfs.testing.helpers import Mount, memtrackfs, start_mount

# A driver whose release takes RELEASE_DELAY: open is answered at once, release after the delay
# (and never, with "never").
RELEASE_DELAY = 0.6
SLOW_DRIVER = r"""
import sys, time
from memtrackfs.driverkit import DeviceDriver
class SlowDriver(DeviceDriver):
    name = "slowdrv"
    def release(self, call):
        time.sleep(float(sys.argv[2]))
        print("released", flush=True)
        if sys.argv[3] == "never":
            time.sleep(3600)
        return b""
driver = SlowDriver(sys.argv[1], destroy_on_close=False)
driver.register("video9")
print("ready", flush=True)
time.sleep(120)
"""


def start_slow_driver(mount: Mount, delay: float, answer: str = "answer") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DRIVER, str(mount.socket), str(delay), answer],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


def open_and_exit(path: Path) -> None:
    """A process that opens the node and exits without closing it: the kernel releases the file."""
    subprocess.run([sys.executable, "-c", f"import os; os.open({str(path)!r}, os.O_RDWR); os._exit(0)"], check=True)


@pytest.fixture
def slow_mount(tmp_path: Path):
    mount = start_mount(tmp_path, "--driver-timeout", "3")
    try:
        yield mount
    finally:
        mount.umount()


def test_settle_waits_for_the_driver_to_finish_a_release(slow_mount: Mount) -> None:
    driver = start_slow_driver(slow_mount, RELEASE_DELAY)
    try:
        open_and_exit(slow_mount / "dev/video9")
        started = time.monotonic()
        done = memtrackfs("settle", "--mount", str(slow_mount.path), "--timeout", "5")
        took = time.monotonic() - started
        assert done.returncode == 0 and done.stdout == b"" and done.stderr == b""
        # The release had reached the driver; settle returned only once the driver answered it.
        assert driver.stdout.readline() == "released\n"
        assert took >= RELEASE_DELAY * 0.5, took
    finally:
        driver.kill()
        driver.wait()


def test_settle_names_what_is_still_pending_when_it_times_out(slow_mount: Mount) -> None:
    driver = start_slow_driver(slow_mount, 0, answer="never")
    try:
        opener = subprocess.Popen([sys.executable, "-c", f"import os; os.open({str(slow_mount / 'dev/video9')!r}, "
                                                         "os.O_RDWR); os._exit(0)"])
        opener.wait()
        assert driver.stdout.readline() == "released\n"  # the release is at the driver, unanswered
        done = memtrackfs("settle", "--mount", str(slow_mount.path), "--timeout", "0.5", check=False)
        assert done.returncode == 1
        assert done.stderr.decode() == (f"memtrackfs: settle: not settled after 0.5 s: dev/video9 opened by pid "
                                        f"{opener.pid} (exited): its release is at the driver\n")
        slow_mount.settle(timeout=5)  # the driver timeout (3 s) ends the release: settled
    finally:
        driver.kill()
        driver.wait()


def test_a_file_a_live_process_still_holds_is_not_waited_for(slow_mount: Mount) -> None:
    driver = start_slow_driver(slow_mount, 0)
    try:
        fd = os.open(slow_mount / "dev/video9", os.O_RDWR)  # held by this test, which runs
        started = time.monotonic()
        slow_mount.settle(timeout=5)
        assert time.monotonic() - started < 2
        os.close(fd)
    finally:
        driver.kill()
        driver.wait()


def test_a_dead_process_dma_bufs_are_released_by_the_time_settle_returns(memtrackfs_mount: Mount) -> None:
    code = ("import os, sys; from memtrackfs.client import MemtrackClient; "
            "c = MemtrackClient(sys.argv[1]); c.call('heap_alloc', heap='system', bytes=1 << 20); os._exit(0)")
    for _ in range(20):
        subprocess.run([sys.executable, "-c", code, str(memtrackfs_mount.socket)], check=True)
        memtrackfs_mount.settle()
        assert memtrackfs_mount.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n"


def test_settle_with_no_mount_given_and_several_mounts_asks_for_one(memtrackfs_mount: Mount, tmp_path: Path) -> None:
    other = start_mount(tmp_path / "other")
    try:
        env = {key: value for key, value in os.environ.items() if key != "MEMTRACKFS_SOCKET"}
        done = memtrackfs("settle", env=env, check=False)
        assert done.returncode == 1
        assert done.stderr.decode().startswith("memtrackfs: settle: give --mount MNT: ")
        inside_run = memtrackfs("settle", env={**env, "MEMTRACKFS_SOCKET": str(other.socket)})
        assert inside_run.returncode == 0
    finally:
        other.umount()


def test_the_player_is_gone_from_the_tree_right_after_settle(vpu_board: Mount, request: pytest.FixtureRequest) -> None:
    """The check the README shows: run the player, wait for it, settle, the tree is back. CI runs
    it --settle-runs times (default 20); `scripts/test.sh tests/test_settle.py --settle-runs 1000`
    is the long check."""
    runs = request.config.getoption("--settle-runs")
    play = [sys.executable, "-m", "vpu_sim", "play", "--mount", str(vpu_board.path), "--seconds", "0.05",
            "--export-to", "display-subsystem"]
    idle = vpu_board.tree()
    failures = []
    for run in range(runs):
        subprocess.run(play, check=True, capture_output=True)
        vpu_board.settle()
        tree, size = vpu_board.tree(), vpu_board.read("proc/rk_dmabuf/size")
        if tree != idle or size != b"Total: 0 KiB\n":
            failures.append((run, tree, size))
    assert not failures, f"{len(failures)} of {runs} runs: the tree was not back after settle: {failures[:2]}"
    with pytest.raises(MemtrackError) as refused:
        with vpu_board.client() as client:
            client.call("settle", timeout_ms=-1)
    assert refused.value.errno_name == "EINVAL"
