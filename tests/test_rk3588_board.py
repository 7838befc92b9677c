"""The RK3588 board on real mounts: which files each board profile has, /proc/mpp_service and
rk_dma_heap as cat and echo see them, and dev/mpp_service served by vpu-sim's mpp driver to real
processes (their threads, their dma-bufs, the ioctl ABI and its errors)."""
from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import stat
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from memtrackfs import paths
from memtrackfs.client import MemtrackClient
from memtrackfs.testing.helpers import (
    Mount,
    start_mount,
    start_vpu_sim,
    stop_process,
    wait_for,
)
from memtrackfs.tools import plot
from memtrackfs.tools.parse import parse_mpp_sessions_summary, parse_rk_dmabuf_dev
from memtrackfs.tools.record import load_record
from vpu_sim import mpp_uapi as abi
from vpu_sim.apps.mpp.service import MppServiceDevice

SUMMARY = "proc/mpp_service/sessions-summary"
KiB = 1 << 10


def _board(tmp_path: Path, bsp: str) -> Iterator[Mount]:
    mount = start_mount(tmp_path, "--board", "rk3588", "--bsp", bsp)
    daemon = start_vpu_sim(mount)
    try:
        yield mount
    finally:
        stop_process(daemon)
        mount.umount()


@pytest.fixture(params=["5.10", "6.1"])
def rk3588(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mount]:
    """An RK3588 mount with the mpp_service driver, per BSP."""
    yield from _board(tmp_path, request.param)


@pytest.fixture
def rk3588_61(tmp_path: Path) -> Iterator[Mount]:
    yield from _board(tmp_path, "6.1")


def cat(mount: Mount, path: str) -> str:
    return subprocess.run(["cat", str(mount / path)], capture_output=True, text=True, check=True).stdout


def sh(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "buffers/" not in str(p.relative_to(root)))


@pytest.mark.parametrize("board, present, absent", [
    ("union", ["proc/rk_dmabuf/sgt", "proc/rk_dma_heap/alloc_bitmap", "sys/kernel/debug/v4l2-memtrack",
               "sys/kernel/debug/dynamic_debug/control", "sys/kernel/debug/dma_buf/bufinfo"],
     ["proc/mpp_service", "proc/rk_dma_heap/dma_heap_info", "sys/kernel/rk_dma_heap"]),
    ("imx8qxp", ["sys/kernel/debug/v4l2-memtrack", "sys/kernel/debug/dma_buf/bufinfo", "sys/kernel/dmabuf/buffers"],
     ["proc/rk_dmabuf", "proc/rk_dma_heap", "proc/mpp_service", "sys/kernel/rk_dma_heap"]),
    ("rk3588", ["proc/rk_dmabuf/peak", "proc/rk_dma_heap/dma_heap_info", "proc/rk_dma_heap/alloc_bitmap",
                "proc/mpp_service/sessions-summary", "sys/kernel/rk_dma_heap/rk_total_pools_kb",
                "sys/kernel/debug/rk_dma_heap/dma_heap_info", "sys/kernel/debug/dma_buf/bufinfo"],
     ["sys/kernel/debug/v4l2-memtrack", "sys/kernel/debug/dynamic_debug", "proc/mpp_service/load"]),
])
def test_each_board_has_its_files(tmp_path: Path, board: str, present: list[str], absent: list[str]) -> None:
    mount = start_mount(tmp_path, "--board", board)
    try:
        files = listing(mount.path)
        assert all(path in files for path in present), files
        assert not any(path in files for path in absent), files
    finally:
        mount.umount()


def test_every_path_the_tools_read_is_where_a_mount_has_it(tmp_path: Path) -> None:
    """memtrackfs/paths.py (where the tools read) and fs/tree.py (what a mount has) spell the
    paths apart: every path must be on the union mount or on an rk3588 one (6.1: every file)."""
    (tmp_path / "union").mkdir()
    (tmp_path / "rk3588").mkdir()
    mounts = [start_mount(tmp_path / "union"), start_mount(tmp_path / "rk3588", "--board", "rk3588", "--bsp", "6.1")]
    try:
        defined = {name: value for name, value in vars(paths).items() if name.isupper() and isinstance(value, str)}
        assert len(defined) > 15
        assert [name for name, value in defined.items() if not any((m / value).exists() for m in mounts)] == []
    finally:
        for mount in mounts:
            mount.umount()


def test_the_mpp_driver_says_when_it_is_ready_and_run_waits_for_it(tmp_path: Path) -> None:
    mount = start_mount(tmp_path, "--board", "rk3588")
    try:
        daemon = start_vpu_sim(mount)
        try:
            assert daemon.output() == f"vpu-sim: ready: rk3588: dev/mpp_service (pid {daemon.pid})\n"
            assert (mount / "dev/mpp_service").exists()  # the line comes after it
        finally:
            stop_process(daemon)
    finally:
        mount.umount()
    # memtrackfs run starts the board's driver and runs COMMAND once it has said so: the node is
    # there (one registered after COMMAND starts would not be in its /dev).
    done = subprocess.run([sys.executable, "-m", "memtrackfs", "run", "--board", "rk3588", "--", "test", "-e",
                           "/dev/mpp_service"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")


def test_the_bsp_decides_the_mpp_service_files(rk3588: Mount) -> None:
    names = sorted(os.listdir(rk3588 / "proc/mpp_service"))
    six_one = "load" in names
    assert names == sorted(["version", "sessions-summary", "supports-cmd", "supports-device", "timing_en"]
                           + (["load", "load_interval"] if six_one else []))
    modes = {name: stat.S_IMODE(os.stat(rk3588 / "proc/mpp_service" / name).st_mode) for name in names}
    assert modes == {name: 0o644 if name in ("timing_en", "load_interval") else 0o444 for name in names}
    assert cat(rk3588, "proc/mpp_service/timing_en") == ("1\n" if six_one else "0\n")
    assert cat(rk3588, "proc/mpp_service/version").startswith("ea89a0945141 author: Yandong Lin 2023-12-20 "
                                                              if not six_one else "53c0acb01bce author: Tao Huang ")
    assert cat(rk3588, "proc/mpp_service/supports-device").splitlines()[4] == "DEVICE[ 9]:RKVDEC    HW_ID:0x53813f05"
    assert cat(rk3588, "sys/kernel/rk_dma_heap/rk_total_pools_kb") == "0\n"
    assert cat(rk3588, SUMMARY) == ""
    for path in ("proc/mpp_service/version", "proc/mpp_service/sessions-summary", "proc/rk_dma_heap/dma_heap_info"):
        done = sh(f"echo 1 > {rk3588 / path}")
        assert done.returncode != 0 and "I/O error" in done.stderr, path  # EIO, in dash's words
    assert stat.S_IMODE(os.stat(rk3588 / "proc/rk_dma_heap/dma_heap_info").st_mode) == 0o644  # proc_create(0644), no write


def test_u32_files_take_what_kstrtou32_takes(rk3588_61: Mount) -> None:
    interval = rk3588_61 / "proc/mpp_service/load_interval"
    assert cat(rk3588_61, "proc/mpp_service/load").startswith("please set load_interval first!!!\n")
    for written, shown in (("1000", "1000"), ("0x10", "16"), ("010", "8"), ("4294967295", "-1")):
        assert sh(f"echo {written} > {interval}").returncode == 0
        assert cat(rk3588_61, "proc/mpp_service/load_interval") == shown + "\n"
    for bad, code in ((b"abc\n", errno.EINVAL), (b" 5", errno.EINVAL), (b"4294967296", errno.ERANGE)):
        fd = os.open(interval, os.O_WRONLY)
        try:
            with pytest.raises(OSError) as refused:
                os.write(fd, bad)
            assert refused.value.errno == code, bad
        finally:
            os.close(fd)
    assert cat(rk3588_61, "proc/mpp_service/load_interval") == "-1\n"  # unchanged
    lines = cat(rk3588_61, "proc/mpp_service/load").splitlines()
    assert len(lines) == 13 and lines[10] == "fdc38100.rkvdec-core      load:   0.00% utilization:   0.00%"


def test_the_board_has_rockchips_heaps(rk3588_61: Mount) -> None:
    with rk3588_61.client() as app:
        heaps = {h["name"]: h for h in app.call("heaps")["heaps"]}
    assert list(heaps) == ["system", "system-dma32", "system-uncached", "system-uncached-dma32", "cma",
                           "cma-uncached", "rk-dma-heap-cma"]
    assert heaps["system-uncached"]["shares"] == "system" and heaps["cma-uncached"]["shares"] == "cma"
    assert (heaps["cma"]["capacity"], heaps["rk-dma-heap-cma"]["capacity"]) == (8 << 20, 32 << 20)
    assert cat(rk3588_61, "proc/rk_dma_heap/alloc_bitmap").startswith("Total: 32768 KiB\n Used: 0 KiB\n\n")


def _init_on_a_thread(device: str) -> tuple[MppServiceDevice, int]:
    """Open dev/mpp_service and init a decoder session from a thread of its own: (file, its thread id)."""
    done: dict[str, object] = {}

    def work() -> None:
        dev = MppServiceDevice(device)
        dev.init_client(abi.DEVICE_RKVDEC)
        done.update(dev=dev, tid=threading.get_native_id())
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return done["dev"], done["tid"]  # type: ignore[return-value]


def test_a_session_is_the_opening_thread_and_indexes_never_reset(rk3588_61: Mount) -> None:
    device = str(rk3588_61 / "dev/mpp_service")
    first, tid = _init_on_a_thread(device)
    assert tid != os.getpid()
    assert cat(rk3588_61, SUMMARY) == (f"session iova range dump:\nsession: pid={tid} index=0\n"
                                       f" device: fdc38100.rkvdec-core\n memory: 0 MiB\n")
    first.close()
    wait_for(lambda: cat(rk3588_61, SUMMARY) == "", what="the session's release")
    second, tid = _init_on_a_thread(device)
    try:
        assert f"session: pid={tid} index=1\n" in cat(rk3588_61, SUMMARY)
    finally:
        second.close()


def test_the_ioctl_abi_refuses_as_the_kernel_does(rk3588_61: Mount) -> None:
    import fcntl
    device = str(rk3588_61 / "dev/mpp_service")
    with MppServiceDevice(device) as dev, rk3588_61.client() as app:
        with pytest.raises(OSError) as refused:
            dev.init_client(18)                                    # VEPU2: disabled on RK3588
        assert refused.value.errno == errno.EINVAL
        with pytest.raises(OSError) as refused:
            dev.query(0x999)                                       # no such command
        assert refused.value.errno == errno.EFAULT
        with pytest.raises(OSError) as refused:
            fcntl.ioctl(dev.fd, abi.MPP_IOC_CFG_V2, bytearray(24))  # only CFG_V1 is served
        assert refused.value.errno == errno.EINVAL
        dev.init_client(abi.DEVICE_RKVDEC)
        assert dev.query(abi.QUERY_HW_ID, abi.DEVICE_RKVDEC) == 0x53813F05
        assert dev.query(abi.QUERY_CMD_SUPPORT, abi.SET_REG_WRITE) == 0x205
        with pytest.raises(OSError) as refused:
            dev.poll()                                             # no task to wait for
        assert refused.value.errno == errno.EIO
        regs = (ctypes.c_uint32 * abi.DEC_REG_NUM)()
        regs[abi.DEC_REG_DECOUT] = 999_999                         # not a dma-buf of this process
        with pytest.raises(OSError) as refused:
            dev.send_task(regs, [(128, 72)], [], [])
        assert refused.value.errno == errno.EBADF
        # A buffer the process frees lives on, attached to the core, until the session closes.
        buffer = app.call("heap_alloc", heap="system", bytes=3 * KiB * KiB)["buffer"]
        regs[abi.DEC_REG_DECOUT] = buffer
        dev.send_task(regs, [(8, 56), (128, 72)], [(224, 14)], [])
        dev.poll()
        app.call("put", buffer=buffer)
        dev_lines = parse_rk_dmabuf_dev(cat(rk3588_61, "proc/rk_dmabuf/dev"))
        assert [(b.exporter, b.kib, b.devices) for b in dev_lines] == [("system", 3072, ("fdc38100.rkvdec-core",))]
        assert dev_lines[0].name.startswith(f"{os.getpid()}-")  # this process's tgid: the allocator's
        # 768 pages, 4 MiB aligned, top-down under rkvdec's RCB window at 0xffe00000
        assert "   0: 0x00000000ff800000..0x00000000ffafffff (      3072 KiB)\n" in cat(rk3588_61, SUMMARY)
    wait_for(lambda: cat(rk3588_61, "proc/rk_dmabuf/size") == "Total: 0 KiB\n", what="the session's release")


def _player(mount: Mount, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vpu_sim", "play", "--mount", str(mount.path), *args],
                            stdout=subprocess.PIPE, text=True)


def test_a_decode_holds_mpps_buffers_named_after_the_player(rk3588: Mount) -> None:
    player = _player(rk3588, "--codec", "hevc", "--seconds", "1.5", "--export-to", "fdd90000.vop")
    try:
        wait_for(lambda: "fdc38100.rkvdec-core" in cat(rk3588, SUMMARY)
                 and parse_mpp_sessions_summary(cat(rk3588, SUMMARY))[0]["fdc38100.rkvdec-core"] == 52140,
                 what="the decoder's 11 frame slots")  # 11 x (4376 + 140) + 3 x 180 + 388 + 3 x 512 KiB
        buffers = parse_rk_dmabuf_dev(cat(rk3588, "proc/rk_dmabuf/dev"))
        comm = Path(f"/proc/{player.pid}/comm").read_text().rstrip("\n")
        assert {b.name for b in buffers} == {f"{player.pid}-{comm}"[:16]}
        assert sorted({(b.exporter, b.kib) for b in buffers}) == [
            ("system", 512), ("system", 4376), ("system-uncached", 140), ("system-uncached", 180),
            ("system-uncached", 388)]
        assert all(b.devices[-1] == "fdc38100.rkvdec-core" for b in buffers)
        # The frames on the display: the last 4, and a 5th while a page flip attaches the new
        # frame before it lets the oldest go (as a KMS commit does).
        assert sum("fdd90000.vop" in b.devices for b in buffers) in (4, 5)
        assert cat(rk3588, "proc/rk_dmabuf/sgt").count("\n") == 2          # system heaps keep no sgt
    finally:
        assert player.wait(30) == 0
    wait_for(lambda: cat(rk3588, "proc/rk_dmabuf/size") == "Total: 0 KiB\n" and cat(rk3588, SUMMARY) == "",
             what="everything released")


def test_the_encoder_table_and_the_cores_load(rk3588_61: Mount) -> None:
    sh(f"echo 1000 > {rk3588_61 / 'proc/mpp_service/load_interval'}")
    encoder = subprocess.Popen([sys.executable, "-m", "vpu_sim", "encode", "--mount", str(rk3588_61.path),
                                "--codec", "hevc", "--size", "3840x2160", "--seconds", "3"], stdout=subprocess.DEVNULL)
    try:
        row = "|       0|  RKVENC|    3840|    2160|    h265|      30|      30|     vbr|31104000|      60|    main|"
        # The table row comes with the session's configuration, the buffers with its first task.
        wait_for(lambda: row in cat(rk3588_61, SUMMARY) and "(     12152 KiB)" in cat(rk3588_61, SUMMARY),
                 what="the encoder's table and its first task's buffers")
        summary = cat(rk3588_61, SUMMARY)
        assert "| session|  device|   width|  height|  format|  fps_in| fps_out| rc_mode| bitrate|gop_size| profile|\n" in summary
        assert " device: fdbd0000.rkvenc-core\n" in summary and "(     12152 KiB)" in summary  # the 4K NV12 input
        busy = re.compile(r"^fdbd0000\.rkvenc-core +load: +([1-9]\d*)\.\d\d%", re.M)
        wait_for(lambda: busy.search(cat(rk3588_61, "proc/mpp_service/load")) is not None, what="a busy encoder core")
    finally:
        assert encoder.wait(30) == 0


def test_a_client_gone_takes_nothing_with_it_but_its_own(rk3588_61: Mount) -> None:
    """A killed player: its fds close, its sessions end, every buffer goes; the driver lives on."""
    player = _player(rk3588_61, "--codec", "h264", "--size", "3840x2160", "--seconds", "30")
    try:
        wait_for(lambda: "fdc38100.rkvdec-core" in cat(rk3588_61, SUMMARY), what="the session")
    finally:
        player.kill()
        player.wait()
    wait_for(lambda: cat(rk3588_61, "proc/rk_dmabuf/size") == "Total: 0 KiB\n" and cat(rk3588_61, SUMMARY) == "",
             what="everything released")
    with MemtrackClient(str(rk3588_61.socket)) as client:
        assert client.call("mpp_sessions")["sessions"] == []


def test_snapshot_diff_and_record_show_the_sessions(rk3588: Mount, tmp_path: Path) -> None:
    def snapshot(name: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "memtrackfs", "snapshot", "--mount", str(rk3588.path), "--json"],
                              capture_output=True, check=True)
        (tmp_path / name).write_bytes(done.stdout)
        return json.loads(done.stdout)

    idle = snapshot("idle.json")
    assert idle["mpp"] == {"devices": {}, "sessions": {}}
    player = _player(rk3588, "--codec", "hevc", "--seconds", "3")
    try:
        wait_for(lambda: "52140" in json.dumps(snapshot("busy.json")["mpp"]), what="the decoder's buffers")
        busy = json.loads((tmp_path / "busy.json").read_text())
        record = tmp_path / "usage.jsonl"
        subprocess.run([sys.executable, "-m", "memtrackfs", "record", "--mount", str(rk3588.path), "--interval", "0.2",
                        "--duration", "0.5", "--out", str(record)], check=True, capture_output=True)
    finally:
        assert player.wait(30) == 0
    assert busy["mpp"]["devices"] == {"fdc38100.rkvdec-core": 52140}
    dump = "load" in os.listdir(rk3588 / "proc/mpp_service")  # 6.1 lists sessions; 5.10 only devices
    assert busy["mpp"]["sessions"] == ({"fdc38100.rkvdec-core#0": {"pid": player.pid, "kib": 52140, "buffers": 29}}
                                       if dump else {})
    text = subprocess.run([sys.executable, "-m", "memtrackfs", "diff", str(tmp_path / "idle.json"),
                           str(tmp_path / "busy.json")], capture_output=True, text=True).stdout
    assert "mpp_service fdc38100.rkvdec-core: KiB +52140 (0 -> 52140)\n" in text
    assert ("  + session fdc38100.rkvdec-core#0 (pid %d) 52140 KiB\n" % player.pid in text) == dump
    head, samples = load_record(str(record))
    assert head["root"] == str(rk3588.path)
    assert samples and all(s["mpp_kib"] == {"fdc38100.rkvdec-core": 52140} for s in samples)
    # plot draws each device's sessions in the dma-buf panel (the only one: no v4l2-memtrack here)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    plot._dmabuf_panel(ax, [s["t"] for s in samples], samples)
    assert "mpp_service fdc38100.rkvdec-core sessions" in ax.get_legend_handles_labels()[1]
    plt.close(fig)
    png = tmp_path / "usage.png"
    subprocess.run([sys.executable, "-m", "memtrackfs", "plot", str(record), "-o", str(png)], check=True)
    assert struct.unpack(">II", png.read_bytes()[16:24]) == (1300, 420)  # one panel


def test_board_options_refuse_what_does_not_fit(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "memtrackfs", "mount", str(tmp_path / "m"), "--bsp", "6.1"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--bsp is for --board rk3588 (its BSP kernels), not union" in done.stderr
    mount = start_mount(tmp_path, "--board", "imx8qxp")
    try:
        done = subprocess.run([sys.executable, "-m", "vpu_sim", "daemon", "--mount", str(mount.path),
                               "--board", "rk3588"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 1
        assert done.stderr == ("vpu-sim: daemon: the mount's board is imx8qxp, whose VPU is not rk3588's: "
                               "mount it with --board rk3588, or leave --board out\n")
        assert os.listdir(mount / "dev") == ["kmsg"]
    finally:
        mount.umount()
