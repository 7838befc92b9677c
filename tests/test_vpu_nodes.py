"""vpu_sim behind real device nodes: real client processes, the RFC's tree, the control, faults."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT

from memtrackfs.launch import DriverStartError
from memtrackfs.testing.helpers import (
    Mount,
    start_mount,
    start_vpu_sim,
    stop_process,
    wait_for,
)
from vpu_sim import uapi
from vpu_sim.apps.v4l2 import OUTPUT, V4l2Device

TREE = "sys/kernel/debug/v4l2-memtrack/amphion-vpu"
DECODER, ENCODER = "dev/video0", "dev/video1"


@pytest.fixture
def vpu(vpu_board: Mount) -> Mount:
    return vpu_board


def instances(mount: Mount) -> list[list[str]]:
    """The tree's instance subtrees, each as its lines (indentation stripped)."""
    found: list[list[str]] = []
    for line in mount.read(TREE).decode().splitlines():
        if line.startswith("  instance "):
            found.append([line.strip()])
        elif line.startswith("    ") and found:
            found[-1].append(line.strip())
    return found


def usage_of(line: str) -> int:
    return int(re.search(r"usage: (\d+)", line).group(1))


# A client written against the UAPI in Python: fcntl.ioctl with ctypes structs (vpu_sim.apps.v4l2).
PY_CLIENT = r"""
import os, sys
from vpu_sim import uapi
from vpu_sim.apps.v4l2 import CAPTURE, OUTPUT, V4l2Device
dev = V4l2Device(sys.argv[1])
dev.set_format(OUTPUT, uapi.V4L2_PIX_FMT_H264, 1920, 1080)
outputs = dev.request_buffers(OUTPUT, 8)
dev.get_format(OUTPUT)
dev.stream_on(OUTPUT)
for i in range(outputs):
    dev.queue(OUTPUT, i, [100000])
dev.get_format(CAPTURE)
for i in range(dev.request_buffers(CAPTURE, dev.get_control(uapi.V4L2_CID_MIN_BUFFERS_FOR_CAPTURE))):
    dev.queue(CAPTURE, i)
dev.stream_on(CAPTURE)
for _ in range(int(sys.argv[2])):
    dev.queue(OUTPUT, dev.dequeue(OUTPUT).index, [100000])
    dev.queue(CAPTURE, dev.dequeue(CAPTURE).index)
for line in sys.stdin:  # "usage": the control now; anything else: close
    if line != "usage\n":
        break
    print("usage", dev.get_control64(uapi.V4L2_CID_MEMORY_USAGE), "tgid", os.getpid(), flush=True)
"""


def _c_client(tmp_path: Path) -> list[str]:
    gcc = shutil.which("gcc")
    assert gcc, "scripts/install.sh installs gcc; the C client test needs it"
    binary = tmp_path / "v4l2_client"
    subprocess.run([gcc, "-Wall", "-Werror", "-o", str(binary), str(ROOT / "tests/c/v4l2_client.c")], check=True)
    return [str(binary)]


@pytest.mark.parametrize("language", ["python", "c"])
def test_a_uapi_client_sees_its_instance_usage_through_the_control(vpu: Mount, tmp_path: Path, language: str) -> None:
    command = [sys.executable, "-c", PY_CLIENT] if language == "python" else _c_client(tmp_path)
    app = subprocess.Popen([*command, str(vpu / DECODER), "5"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def control() -> tuple[int, int]:
        """(the client's V4L2_CID_MEMORY_USAGE now, its tgid)"""
        app.stdin.write("usage\n")
        app.stdin.flush()
        line = app.stdout.readline()
        assert line.startswith("usage "), app.stderr.read()
        words = line.split()
        return int(words[1]), int(words[3])

    try:
        # The control follows the tree through the driver's coalesced (200 ms) notifications.
        wait_for(lambda: control()[0] == usage_of(instances(vpu)[0][0]), what="the control to show the tree's usage")
        usage, tgid = control()
        [instance] = instances(vpu)
        assert instance[0].startswith(f"instance (tgid={tgid}, pid={tgid}) usage: {usage}")
        assert usage == usage_of(instance[0]) > 0
    finally:
        app.communicate("close\n", timeout=10)
    assert app.returncode == 0
    vpu.settle()  # its release has reached the driver, which freed the instance
    assert instances(vpu) == []


def test_1080p_decode_and_encode_show_the_model_sizes(vpu: Mount) -> None:
    apps = [subprocess.Popen([sys.executable, "-m", "vpu_sim", name, "--mount", str(vpu.path), "--seconds", "1.5"],
                             stdout=subprocess.PIPE, text=True) for name in ("play", "encode")]
    try:
        # Each application prints its first progress line once it streams: its buffers are all set up
        # (the tree alone could be read while the decoder is still allocating its CAPTURE planes).
        assert all(app.stdout.readline() for app in apps)
        wait_for(lambda: sum("ref-frame" in "".join(i) for i in instances(vpu)) == 1
                 and sum("dcp" in "".join(i) for i in instances(vpu)) == 1, what="both instances set up")
        trees = {("decoder" if any("mbi" in l for l in i) else "encoder"): i for i in instances(vpu)}
    finally:
        for app in apps:
            app.wait(20)
    dec, enc = trees["decoder"], trees["encoder"]
    leaves = lambda lines, name: [usage_of(l) for l in lines if l.startswith(name + " [leaf]")]
    assert leaves(dec, "bitstream-ring-buffer") == [12582912]
    assert leaves(dec, "udata") == [4096]
    assert leaves(dec, "mbi") == [917504] * 7     # num_ref + num_dpb at 1080p H.264
    assert leaves(dec, "dcp") == [2040000] * 2
    # output: 8 compressed planes of 1920*1080, page-aligned; capture: NV12M_8L128 planes
    assert [l for l in dec if l.startswith("output ")][0].endswith(f"usage: {8 * 2076672} (count=8)")
    captures = [l for l in dec if l.startswith("capture ")][0]
    count = int(re.search(r"count=(\d+)", captures).group(1))
    assert usage_of(captures) == count // 2 * (2359296 + 1310720)
    assert leaves(enc, "bitstream-ring-buffer") == [3145728]
    assert leaves(enc, "enc-frame") == [3110400] * 6
    assert leaves(enc, "ref-frame") == [3110400] * 3
    assert [l for l in enc if l.startswith("output ")][0].endswith(f"usage: {6 * (2076672 + 1040384)} (count=12)")
    assert all(app.returncode == 0 for app in apps)


def test_a_client_killed_mid_stream_loses_its_instance(vpu: Mount) -> None:
    base = usage_of(vpu.read(TREE).decode().splitlines()[1])
    app = subprocess.Popen([sys.executable, "-m", "vpu_sim", "play", "--mount", str(vpu.path), "--seconds", "30",
                            "--export-to", "display-subsystem"], stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: vpu.read("proc/rk_dmabuf/size") != b"Total: 0 KiB\n", what="frames exported")
        assert any("dcp" in "".join(i) for i in instances(vpu))
        app.kill()
        app.wait()
        vpu.settle()
        assert instances(vpu) == []  # the killed client's instance went with its release
    finally:
        app.kill()
        app.wait()
    assert usage_of(vpu.read(TREE).decode().splitlines()[1]) == base
    assert vpu.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n"


def test_opens_are_unlimited_and_a_ninth_stream_is_refused_at_streamon(vpu: Mount) -> None:
    """vpu_inst_register() takes a firmware slot at STREAMON: open never fails for want of one."""
    devices = [V4l2Device(str(vpu / DECODER)) for _ in range(12)]
    try:
        assert len(instances(vpu)) == 12
        for device in devices[:8]:
            device.request_buffers(OUTPUT, 8)
            device.stream_on(OUTPUT)
        devices[8].request_buffers(OUTPUT, 8)
        with pytest.raises(OSError) as refused:
            devices[8].stream_on(OUTPUT)
        assert refused.value.errno == errno.EINVAL
        devices.pop(0).close()
        devices[7].stream_on(OUTPUT)  # a slot is free again
    finally:
        for device in devices:
            device.close()


def test_a_killed_daemon_makes_nodes_fail_and_a_restart_works(tmp_path: Path) -> None:
    mount = start_mount(tmp_path)
    daemon = start_vpu_sim(mount)
    try:
        fd = os.open(mount / DECODER, os.O_RDWR)
        daemon.kill()
        daemon.wait()
        wait_for(lambda: not (mount / DECODER).exists(), what="the nodes to go")
        started = time.monotonic()
        with pytest.raises(OSError) as gone:
            fcntl.ioctl(fd, uapi.VIDIOC_QUERYCAP, bytearray(ctypes.sizeof(uapi.v4l2_capability)))
        assert gone.value.errno == errno.ENODEV and time.monotonic() - started < 2
        os.close(fd)
        assert not (mount / TREE).exists()          # the driver's tree went with it
        assert sorted(os.listdir(mount.path)) == ["dev", "proc", "sys"]  # memtrackfs stays up
        daemon = start_vpu_sim(mount)
        done = subprocess.run([sys.executable, "-m", "vpu_sim", "play", "--mount", str(mount.path), "--seconds", "0.5"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and " frames" in done.stdout
    finally:
        stop_process(daemon)
        mount.umount()


def test_the_daemon_says_when_it_is_ready_and_a_failed_start_names_its_log(tmp_path: Path) -> None:
    mount = start_mount(tmp_path)
    try:
        daemon = start_vpu_sim(mount)
        try:
            assert daemon.output() == "vpu-sim: ready: imx8qxp: decoder dev/video0, encoder dev/video1 " \
                                      f"(pid {daemon.pid})\n"
            assert (mount / DECODER).exists() and (mount / ENCODER).exists()  # the line comes after them
        finally:
            stop_process(daemon)
    finally:
        mount.umount()
    not_a_mount = Mount(tmp_path / "elsewhere", tmp_path / "none.sock")
    not_a_mount.path.mkdir()
    with pytest.raises(DriverStartError) as failed:
        start_vpu_sim(not_a_mount)
    log = tmp_path / "vpu-sim.log"
    assert str(failed.value) == (f"vpu-sim daemon exited with status 1 before it was ready (its log: {log}):\n"
                                 + log.read_text().strip())
    assert f"{not_a_mount.path} is not a memtrackfs mount point" in log.read_text()


# A client that subscribes to V4L2_EVENT_CTRL on the memory-usage control and waits for it with
# select() on exceptfds (poll() with POLLPRI alone would also see POLLERR before streaming: FUSE
# does not say which events a poller asked for, README).
CTRL_EVENT_CLIENT = r"""
import ctypes, fcntl, select, sys, time
from vpu_sim import uapi
from vpu_sim.apps.v4l2 import OUTPUT, V4l2Device
dev = V4l2Device(sys.argv[1])
sub = uapi.v4l2_event_subscription(type=uapi.V4L2_EVENT_CTRL, id=uapi.V4L2_CID_MEMORY_USAGE,
                                   flags=uapi.V4L2_EVENT_SUB_FL_SEND_INITIAL)
fcntl.ioctl(dev.fd, uapi.VIDIOC_SUBSCRIBE_EVENT, sub)
def next_event():
    assert select.select([], [], [dev.fd], 5)[2], "no event within 5 s"
    ev = uapi.v4l2_event()
    fcntl.ioctl(dev.fd, uapi.VIDIOC_DQEVENT, ev)
    return ev
initial = next_event()
print("initial", initial.u.ctrl.changes, initial.u.ctrl.value64)
dev.set_format(OUTPUT, uapi.V4L2_PIX_FMT_H264, 1920, 1080)
started = time.monotonic()
dev.request_buffers(OUTPUT, 8)
changed = next_event()
print("changed", changed.u.ctrl.changes, changed.u.ctrl.value64, "after %.2f s" % (time.monotonic() - started))
print("usage", dev.get_control64(uapi.V4L2_CID_MEMORY_USAGE))
"""


def test_memory_usage_changes_arrive_as_control_events(vpu: Mount) -> None:
    done = subprocess.run([sys.executable, "-c", CTRL_EVENT_CLIENT, str(vpu / DECODER)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    flags_value = uapi.V4L2_EVENT_CTRL_CH_FLAGS | uapi.V4L2_EVENT_CTRL_CH_VALUE
    assert lines[0] == f"initial {flags_value} 0"
    _, changes, value, _, seconds, _ = lines[1].split()
    assert int(changes) == uapi.V4L2_EVENT_CTRL_CH_VALUE and int(value) == 8 * 2_076_672
    assert float(seconds) >= 0.19  # the RFC's 200 ms coalescing
    assert lines[2] == f"usage {8 * 2_076_672}"


def test_buffers_map_shared_and_keep_what_is_written(vpu: Mount) -> None:
    """mmap(MAP_SHARED) of a buffer at its QUERYBUF offset; stores survive munmap and re-mapping;
    read() and write() of the node are EINVAL, as on a V4L2 node."""
    import mmap
    with V4l2Device(str(vpu / DECODER)) as dev:
        with pytest.raises(OSError) as refused:
            os.read(dev.fd, 16)
        assert refused.value.errno == errno.EINVAL
        with pytest.raises(OSError) as refused:
            os.write(dev.fd, b"x")
        assert refused.value.errno == errno.EINVAL
        dev.set_format(OUTPUT, uapi.V4L2_PIX_FMT_H264, 1280, 720)
        dev.request_buffers(OUTPUT, 8)
        b, planes = dev._buffer(OUTPUT, 3)
        fcntl.ioctl(dev.fd, uapi.VIDIOC_QUERYBUF, b)
        offset, length = planes[0].m.mem_offset, planes[0].length
        mapping = mmap.mmap(dev.fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        assert mapping[:4] == b"\0\0\0\0"
        mapping[4096:4100] = b"abcd"
        mapping.close()
        again = mmap.mmap(dev.fd, length, mmap.MAP_SHARED, mmap.PROT_READ, offset=offset)
        assert again[4096:4100] == b"abcd"
        again.close()
        assert (vpu / DECODER).stat().st_size == 1 << 40  # every mmap offset lies inside the file


def test_a_driver_bug_answers_the_call_with_eio_and_a_kernel_log_line(tmp_path: Path, monkeypatch) -> None:
    """An exception other than OSError in the driver (a bug, injected here) must still answer the
    call: EIO at once, with the bug in the kernel log, not the app waiting for --driver-timeout."""
    from vpu_sim.driver.amphion.daemon import VpuDaemon
    from vpu_sim.driver.amphion.ioctls import VideoFile

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(VideoFile, "ioctl", broken)
    mount = start_mount(tmp_path, "--driver-timeout", "30")
    daemon = None
    try:
        daemon = VpuDaemon(str(mount.socket))  # served by its client's threads, here in the test
        fd = os.open(mount / DECODER, os.O_RDWR)
        try:
            with pytest.raises(OSError) as failed:
                fcntl.ioctl(fd, uapi.VIDIOC_QUERYCAP, bytearray(ctypes.sizeof(uapi.v4l2_capability)))
            assert failed.value.errno == errno.EIO
        finally:
            os.close(fd)
        bugs = [r for r in mount.kmsg() if "vpu_sim: BUG: ioctl of dev/video0 failed" in r]
        assert bugs and "ZeroDivisionError('division by zero')" in bugs[0] and bugs[0].startswith("3,"), bugs
    finally:
        if daemon is not None:
            daemon.shutdown()
        mount.umount()
