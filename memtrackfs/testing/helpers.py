"""Helpers for tests that need a real memtrackfs (and vpu_sim): used by the pytest plugin.

Everything here runs the real commands as separate processes (``python -m memtrackfs mount``,
``python -m vpu_sim daemon``), exactly as a user would.
"""
from __future__ import annotations

import ctypes.util
import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from memtrackfs import launch, paths
from memtrackfs.client import MemtrackClient
from memtrackfs.mounts import read_mounts, runtime_dir
from memtrackfs.tools.kmsg import read_kmsg_lines
from memtrackfs.tools.snapshot import Snapshot, diff_snapshots, take_snapshot

FUSE_DEVICE = (10, 229)  # the misc device /dev/fuse (Documentation/admin-guide/devices.txt)


def memtrackfs(*args: str, env: Optional[dict[str, str]] = None, check: bool = True,
               timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the memtrackfs command (a separate process); its output is captured as bytes."""
    done = subprocess.run([sys.executable, "-m", "memtrackfs", *args], capture_output=True,
                          env=env, timeout=timeout)
    if check and done.returncode:
        raise RuntimeError(f"memtrackfs {' '.join(args)} failed ({done.returncode}): {done.stderr.decode().strip()}")
    return done


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def fuse_unusable() -> Optional[str]:
    """Why this machine cannot mount a FUSE filesystem, or None if it can."""
    try:
        info = os.stat("/dev/fuse")
    except OSError as exc:
        return f"/dev/fuse: {exc.strerror} (modprobe fuse, or give the container /dev/fuse)"
    if not stat.S_ISCHR(info.st_mode) or (os.major(info.st_rdev), os.minor(info.st_rdev)) != FUSE_DEVICE:
        return "/dev/fuse is not the FUSE device (character device 10:229)"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"cannot open /dev/fuse: {exc.strerror}"
    if ctypes.util.find_library("fuse") is None:
        return "libfuse2 is not installed (Debian: apt-get install libfuse2)"
    if os.geteuid() != 0 and not (shutil.which("fusermount3") or shutil.which("fusermount")):
        return "fusermount3 is not installed (Debian: apt-get install fuse3)"
    return None


class Mount:
    """A live memtrackfs mount: its mount point, its socket, and helpers to use both; ``driver``
    is the ``vpu-sim daemon`` serving its nodes, if one was started for it."""

    def __init__(self, path: Path, socket: Path) -> None:
        self.path = path
        self.socket = socket
        self.driver: Optional[launch.DriverProcess] = None

    def __truediv__(self, relative: str) -> Path:
        return self.path / relative

    def read(self, relative: str) -> bytes:
        with open(self.path / relative, "rb") as f:
            return f.read()

    def tree(self, root: str = "amphion-vpu") -> str:
        """The v4l2-memtrack file of a tracker root, as text."""
        return self.read(f"{paths.MEMTRACK_DIR}/{root}").decode()

    def kmsg(self) -> list[str]:
        """dev/kmsg's records as dmesg reads them: every one there is, without waiting for more."""
        return read_kmsg_lines(str(self.path / paths.KMSG))

    def client(self, **kwargs: object) -> MemtrackClient:
        return MemtrackClient(str(self.socket), **kwargs)

    def settle(self, timeout: float = 10.0) -> None:
        """Return once every release from processes that have exited has been processed (their
        device files' releases, by the driver too, and their socket connections' ends), as
        ``memtrackfs settle`` does; MemtrackError (ETIMEDOUT) naming what is still pending."""
        with self.client() as client:
            client.call("settle", timeout_ms=round(timeout * 1000), timeout=timeout + 30)

    def snapshot(self) -> Snapshot:
        """What the files show, once settled (as ``memtrackfs snapshot --json``): for ``assert_no_leak``."""
        self.settle()
        return take_snapshot(str(self.path))

    def umount(self) -> None:
        if self.driver is not None:
            stop_process(self.driver)
        if any(m.mountpoint == str(self.path) for m in read_mounts()):
            memtrackfs("umount", str(self.path))


def assert_no_leak(before: Snapshot, after: Snapshot) -> None:
    """AssertionError with ``memtrackfs diff``'s report if any tracker node, leaf, dma-buf or
    process's usage grew from ``before`` to ``after`` (two ``Mount.snapshot()``)."""
    text, grew = diff_snapshots(before, after)
    if grew:
        raise AssertionError(f"memory grew (memtrackfs diff):\n{text}")


def start_mount(base: Path, *options: str, env: Optional[dict[str, str]] = None) -> Mount:
    """Mount a fresh memtrackfs at ``base/mnt``, its socket at ``base/driver.sock`` if that path
    fits in a Unix socket address, else under the runtime dir."""
    socket = base / "driver.sock"
    if len(os.fsencode(socket)) > 100:
        socket = Path(runtime_dir()) / f"test-{uuid.uuid4().hex[:12]}.sock"
    mount = Mount(base / "mnt", socket)
    memtrackfs("mount", str(mount.path), "--socket", str(mount.socket), *options, env=env)
    return mount


def start_vpu_sim(mount: Mount, *args: str) -> launch.DriverProcess:
    """Start ``vpu-sim daemon`` on the mount (the mount's board's driver unless ``--board`` says
    otherwise); return once it says its nodes are ready (decoder and encoder, or dev/mpp_service).
    Its output goes to ``vpu-sim.log`` beside the mount point (``.output()``)."""
    return launch.start_vpu_sim(["daemon", "--mount", str(mount.path), *args],
                                str(mount.path.parent / "vpu-sim.log"))


def vpu_sim_options(**options: Any) -> list[str]:
    """``vpu-sim daemon`` options from keywords: ``board="imx8qm", fps=60, fault=[...]``."""
    args: list[str] = []
    for key, value in options.items():
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            args += [f"--{key.replace('_', '-')}", str(item)]
    return args


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it does not go in time."""
    launch.stop(proc, timeout=timeout)
    if proc.stdout is not None:
        proc.stdout.close()

