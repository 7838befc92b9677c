"""Mount lifecycle: ready on return, every way of stopping is clean, stale mounts recover."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import ROOT

from memtrackfs.mounts import find_mount, is_stale, read_mounts
from memtrackfs.testing.helpers import Mount, memtrackfs, start_mount, wait_for


def daemon_pid(mount: Mount) -> int:
    with mount.client() as c:
        return c.server["pid"]


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def assert_cleanly_gone(mount: Mount, pid: int) -> None:
    assert wait_gone(pid), "daemon still running"
    assert find_mount(str(mount.path)) is None
    assert not mount.socket.exists()


def test_mount_is_usable_when_the_command_returns_and_umount_cleans_up(tmp_path: Path) -> None:
    mount = start_mount(tmp_path)
    # No waiting: the command returned, so the tree and the socket must answer now.
    assert sorted(os.listdir(mount.path)) == ["dev", "proc", "sys"]
    pid = daemon_pid(mount)
    done = memtrackfs("umount", str(mount.path))
    assert done.stdout.decode().startswith("memtrackfs: unmounted")
    assert_cleanly_gone(mount, pid)


@pytest.mark.parametrize("how", ["fusermount", "SIGTERM", "SIGINT"])
def test_other_ways_to_stop_are_clean(tmp_path: Path, how: str) -> None:
    mount = start_mount(tmp_path)
    pid = daemon_pid(mount)
    if how == "fusermount":
        subprocess.run(["fusermount3", "-u", str(mount.path)], check=True)
    else:
        os.kill(pid, getattr(signal, how))
    assert_cleanly_gone(mount, pid)


def test_foreground_mount_stops_on_ctrl_c(tmp_path: Path) -> None:
    mnt, sock = tmp_path / "mnt", tmp_path / "s.sock"
    proc = subprocess.Popen([sys.executable, "-m", "memtrackfs", "mount", str(mnt), "--socket", str(sock),
                             "--foreground"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith(f"memtrackfs: mounted at {mnt}")
        assert os.listdir(mnt / "dev") == ["kmsg"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["fusermount3", "-uz", str(mnt)])
    assert find_mount(str(mnt)) is None and not sock.exists()


def test_killed_daemon_leaves_a_stale_mount_that_mount_recovers(tmp_path: Path) -> None:
    mount = start_mount(tmp_path)
    with mount.client() as c:
        c.call("root", name="before-crash")
    os.kill(daemon_pid(mount), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not is_stale(str(mount.path)) and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(OSError) as stale:
        os.listdir(mount.path)
    assert "Transport endpoint is not connected" in str(stale.value)
    with pytest.raises(ConnectionError):
        mount.client()  # the socket file is left over, nobody listens: a clear error

    again = memtrackfs("mount", str(mount.path), "--socket", str(mount.socket))
    try:
        assert b"recovered stale mount" in again.stderr
        assert os.listdir(mount.path / "sys/kernel/debug/v4l2-memtrack") == []  # a fresh board
        assert daemon_pid(mount) > 0
    finally:
        mount.umount()


@pytest.mark.parametrize("socket_suffix", ["", "2"], ids=["same-socket", "another-socket"])
def test_mounting_over_a_live_mount_is_refused(mount: Mount, socket_suffix: str) -> None:
    # Mounting the same point twice (its default socket is the live one's) names the mount, not the socket.
    second = memtrackfs("mount", str(mount.path), "--socket", str(mount.socket) + socket_suffix, check=False)
    assert second.returncode == 1
    assert b"already a live memtrackfs mount" in second.stderr


def test_umount_of_something_else_is_refused(tmp_path: Path) -> None:
    done = memtrackfs("umount", str(tmp_path), check=False)
    assert done.returncode == 1 and b"is not a memtrackfs mount point" in done.stderr


def test_fusepy_301_runs_the_same_code(tmp_path: Path) -> None:
    """The code keeps to fusepy's API: mount with fusepy 3.0.1 (installed by scripts/test.sh)."""
    fusepy = ROOT / ".venv" / "fusepy-3.0.1"
    assert (fusepy / "fuse.py").exists(), "scripts/test.sh installs fusepy 3.0.1 here"
    env = dict(os.environ, MEMTRACKFS_FUSE="fusepy", PYTHONPATH=str(fusepy))
    mount = start_mount(tmp_path, env=env)
    try:
        probe = subprocess.run([sys.executable, "-c", "import memtrackfs.fs.adapter as a; print(a.fuse.__file__)"],
                               env=env, capture_output=True, text=True, check=True)
        assert probe.stdout.strip() == str(fusepy / "fuse.py")
        done = memtrackfs("replay", str(ROOT / "tests/golden/traces/edge_cases.trace"), "--mount", str(mount.path))
        assert done.stdout == (ROOT / "tests/golden/traces/edge_cases.out").read_bytes()
        subprocess.run(["bash", "-c", f"echo 'file v4l2-memtrack.c +p' > {mount.path}/sys/kernel/debug/dynamic_debug/control"],
                       check=True)
        assert mount.read("sys/kernel/debug/dynamic_debug/control").count(b" =p ") == 2
    finally:
        mount.umount()


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "1e9", "soon"])
def test_durations_must_be_seconds_a_user_could_mean(tmp_path: Path, value: str) -> None:
    """--driver-timeout (and record's --interval/--duration): nan, inf, negatives, zero and more
    than a day are refused as bad usage, before anything is mounted."""
    try:
        for args in (["mount", str(tmp_path / "mnt"), "--driver-timeout", value],
                     ["record", "--out", str(tmp_path / "r.json"), "--interval", value],
                     ["record", "--out", str(tmp_path / "r.json"), "--duration", value]):
            done = memtrackfs(*args, check=False)
            assert done.returncode == 2 and b"seconds" in done.stderr, (args, done.stderr)
            assert b"Traceback" not in done.stderr
    finally:
        for entry in read_mounts():
            if entry.mountpoint.startswith(str(tmp_path)):
                memtrackfs("umount", entry.mountpoint, check=False)


def test_umount_and_mount_of_a_stopped_daemons_mount_finish_and_say_what_they_did(tmp_path: Path) -> None:
    """A stopped daemon answers nothing: stat of its mount point waits for ever. umount detaches
    the mount (lazily) and says so; mount refuses the mount point; neither waits for the daemon,
    which exits by itself once it runs again."""
    mount = start_mount(tmp_path)
    with mount.client() as c:
        pid = int(c.server["pid"])
    os.kill(pid, signal.SIGSTOP)
    try:
        again = memtrackfs("mount", str(mount.path), "--socket", str(tmp_path / "other.sock"), check=False,
                           timeout=30)
        assert again.returncode == 1 and b"whose daemon does not answer (stopped?)" in again.stderr, again
        done = memtrackfs("umount", str(mount.path), check=False, timeout=30)
        assert done.returncode == 0, done
        assert (f"memtrackfs: {mount.path} did not answer within 2 s (its daemon (pid {pid}) is stopped): "
                "detached it (lazy unmount)").encode() in done.stdout, done.stdout
        assert find_mount(str(mount.path)) is None
    finally:
        os.kill(pid, signal.SIGCONT)
        mount.umount()  # if it is still there
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
             what="the continued daemon to exit")
    assert not mount.socket.exists()
