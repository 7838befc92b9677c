"""Device nodes served by a driver over the socket: forwarding, caller context, user memory, faults."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memtrackfs.testing.helpers import Mount, memtrackfs

# A generic test driver (memtrackfs.driverkit): answers open/release with 0; for ioctl 0xc0105601
# (_IOWR('V', 1, 16 bytes)) it reads 8 bytes at the address held in the argument's first 8 bytes
# (a pointer, as in v4l2_ext_controls), writes them back reversed there, and returns the argument
# with its second half replaced by its caller's tgid; cmd 0x40045602 answers EBUSY; anything else
# is ENOTTY; cmd 0x40045603 never answers.
DRIVER = r"""
import errno, struct, sys, time
from memtrackfs.driverkit import DeviceDriver
class TestDriver(DeviceDriver):
    name = "testdrv"
    def _seen(self, call):
        print(call.kind, call.tgid, call.pid, flush=True)
    def open(self, call):
        self._seen(call)
        return b""
    def release(self, call):
        self._seen(call)
        return b""
    def ioctl(self, call):
        cmd, data = call.event["cmd"], call.argument
        if cmd == 0x40045603:
            time.sleep(3600)
        self._seen(call)
        if cmd == 0xc0105601:
            addr = struct.unpack_from("<Q", data)[0]
            call.memory.write(addr, call.memory.read(addr, 8)[::-1])
            return data[:8] + struct.pack("<Q", call.tgid)
        raise OSError(errno.EBUSY if cmd == 0x40045602 else errno.ENOTTY, "test")
driver = TestDriver(sys.argv[1], destroy_on_close=False)
driver.register("video7")
print("ready", flush=True)
time.sleep(120)
"""

# A client process using the node like a V4L2 application would.
APP = r"""
import ctypes, errno, fcntl, os, struct, sys, threading
fd = os.open(sys.argv[1], os.O_RDWR)
cell = ctypes.create_string_buffer(b"12345678", 8)
arg = bytearray(struct.pack("<QQ", ctypes.addressof(cell), 0))
result = {}
def worker():
    result["ret"] = fcntl.ioctl(fd, 0xc0105601, arg)
    result["tid"] = threading.get_native_id()
t = threading.Thread(target=worker); t.start(); t.join()
print(result["ret"], cell.raw.decode(), struct.unpack("<QQ", arg)[1], os.getpid(), result["tid"])
try:
    fcntl.ioctl(fd, 0x40045602, b"\0" * 4)
except OSError as e:
    print("busy", errno.errorcode[e.errno])
try:
    fcntl.ioctl(fd, 0x5401, b"\0" * 60)
except OSError as e:
    print("tcgets", errno.errorcode[e.errno])
os.close(fd)
"""


@pytest.fixture
def short_timeout_mount(tmp_path: Path):
    mount = Mount(tmp_path / "mnt", tmp_path / "driver.sock")
    memtrackfs("mount", str(mount.path), "--socket", str(mount.socket), "--driver-timeout", "1")
    try:
        yield mount
    finally:
        mount.umount()


@pytest.fixture
def driver(short_timeout_mount: Mount):
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(short_timeout_mount.socket)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    yield proc
    proc.kill()
    proc.wait()


def test_calls_reach_the_driver_with_context_and_user_memory(short_timeout_mount: Mount, driver) -> None:
    node = short_timeout_mount / "dev/video7"
    assert os.listdir(short_timeout_mount / "dev") == ["kmsg", "video7"]
    app = subprocess.run([sys.executable, "-c", APP, str(node)], capture_output=True, text=True, check=True)
    ret, cell, tgid_seen, pid, tid = app.stdout.splitlines()[0].split()
    assert (ret, cell, int(tgid_seen)) == ("0", "87654321", int(pid))
    assert app.stdout.splitlines()[1:] == ["busy EBUSY", "tcgets ENOTTY"]
    events = [driver.stdout.readline().split() for _ in range(5)]
    assert events[0] == ["open", pid, pid]
    assert events[1] == ["ioctl", pid, tid]  # the ioctl came from another thread: pid is the thread's
    assert events[4][0] == "release"


def test_a_silent_driver_times_out_instead_of_hanging(short_timeout_mount: Mount, driver) -> None:
    fd = os.open(short_timeout_mount / "dev/video7", os.O_RDWR)
    try:
        started = time.monotonic()
        with pytest.raises(OSError) as err:
            fcntl.ioctl(fd, 0x40045603, b"\0" * 4)
        assert err.value.errno == errno.ETIMEDOUT and time.monotonic() - started < 5
        os.kill(driver.pid, signal.SIGSTOP)  # a stopped driver: bounded too
        try:
            started = time.monotonic()
            with pytest.raises(OSError) as err:
                fcntl.ioctl(fd, 0x40045602, b"\0" * 4)
            assert err.value.errno == errno.ETIMEDOUT and time.monotonic() - started < 5
        finally:
            os.kill(driver.pid, signal.SIGCONT)
    finally:
        os.close(fd)


def test_a_dead_driver_makes_its_nodes_fail_with_enodev(short_timeout_mount: Mount, driver) -> None:
    fd = os.open(short_timeout_mount / "dev/video7", os.O_RDWR)
    try:
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 5
        while "video7" in os.listdir(short_timeout_mount / "dev") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.listdir(short_timeout_mount / "dev") == ["kmsg"]
        with pytest.raises(OSError) as err:
            fcntl.ioctl(fd, 0x40045602, b"\0" * 4)
        assert err.value.errno == errno.ENODEV
    finally:
        os.close(fd)  # still closes cleanly
    with pytest.raises(FileNotFoundError):
        os.open(short_timeout_mount / "dev/video7", os.O_RDWR)
    assert "removed: driver testdrv disconnected" in "\n".join(short_timeout_mount.kmsg())


def test_ioctl_on_an_ordinary_file_is_enotty_and_bad_registrations_are_refused(mount: Mount) -> None:
    fd = os.open(mount / "dev/kmsg", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as err:
            fcntl.ioctl(fd, 0x80685600, bytearray(104))
        assert err.value.errno == errno.ENOTTY
    finally:
        os.close(fd)
    with mount.client() as c:
        c.call("register_device", name="video0")
        for name, code in (("video0", "EEXIST"), ("kmsg", "EINVAL"), ("../x", "EINVAL")):
            with pytest.raises(OSError) as refused:
                c.call("register_device", name=name)
            assert refused.value.errno_name == code
        with pytest.raises(OSError) as refused:
            c.call("complete", call=12345)
        assert refused.value.errno_name == "ENOENT"


# Every errno name the protocol accepts as a result. The driver below answers each call of one
# kind (argv: socket, kind, file) with the name written in that file; every other call with 0.
# (It reads the name at each call: the VFS calls open again after ECHILD or ESTALE, as on a board.)
ERRNO_NAMES = sorted(name for name in dir(errno) if name.startswith("E") and isinstance(getattr(errno, name), int))
ERRNO_DRIVER = r"""
import sys, threading, time
from memtrackfs.client import MemtrackClient
kind, answer = sys.argv[2], sys.argv[3]
def complete(ev, result):
    client.call("complete", call=ev["call"], result=result)
    if ev["event"] == "release":
        print("released", result, flush=True)  # close() returns before the release is done
def on_event(ev):
    if "call" in ev:
        result = open(answer).read() if ev["event"] == kind else 0
        threading.Thread(target=complete, args=(ev, result)).start()
client = MemtrackClient(sys.argv[1], client="errnos", on_event=on_event)
client.call("register_device", name="video7")
print("ready", flush=True)
time.sleep(600)
"""
# open(2) and ioctl(2) through libc: os.open would retry an EINTR answer by itself.
LIBC = ctypes.CDLL(None, use_errno=True)


def _libc_open(path: Path) -> tuple[int, int]:
    fd = LIBC.open(str(path).encode(), os.O_RDWR)
    return fd, (ctypes.get_errno() if fd < 0 else 0)


def _mount_still_works(mount: Mount) -> None:
    """What ENOSYS on open poisons: every other file of the mount (reads empty, EBADF)."""
    assert mount.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n"
    with open(mount / "proc/rk_dmabuf/peak", "w") as f:
        f.write("0\n")
    assert len(mount.kmsg()) > 0


@pytest.mark.parametrize("kind", ["open", "ioctl", "release"])
def test_no_errno_a_driver_answers_affects_more_than_its_own_call(short_timeout_mount: Mount, kind: str,
                                                                  tmp_path: Path) -> None:
    """FUSE gives some errnos a meaning for the whole mount (ENOSYS on open: "this filesystem has
    no open", after which every file of it reads empty). Whatever name a driver answers, only its
    own call fails: with that errno, or (ENOSYS) ENOTTY for an ioctl and EIO otherwise, and the
    kernel log names the driver."""
    mount = short_timeout_mount
    answer = tmp_path / "answer"
    answer.write_text("")
    driver = subprocess.Popen([sys.executable, "-c", ERRNO_DRIVER, str(mount.socket), kind, str(answer)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline() == "ready\n"
        node = mount / "dev/video7"
        fd = -1
        if kind == "ioctl":
            fd, err = _libc_open(node)
            assert err == 0
        for name in ERRNO_NAMES:
            answer.write_text(name)
            expected = getattr(errno, name)
            if expected == errno.ENOSYS:
                expected = errno.ENOTTY if kind == "ioctl" else errno.EIO
            if kind == "open":
                opened, err = _libc_open(node)
                if opened >= 0:
                    os.close(opened)
                assert opened < 0 and err == expected, (name, opened, errno.errorcode.get(err))
            elif kind == "ioctl":
                ret = LIBC.ioctl(fd, 0x40045602, ctypes.create_string_buffer(4))
                err = ctypes.get_errno() if ret < 0 else 0
                assert ret < 0 and err == expected, (name, ret, errno.errorcode.get(err))
            else:
                opened, err = _libc_open(node)
                assert err == 0 and LIBC.close(opened) == 0, name
                assert driver.stdout.readline() == f"released {name}\n"
            _mount_still_works(mount)
        if fd >= 0:
            os.close(fd)
        warnings = [r for r in mount.kmsg() if "driver errnos answered" in r]
        assert len(warnings) == 1 and f"answered {kind} with ENOSYS" in warnings[0], warnings
    finally:
        driver.kill()
        driver.wait()
