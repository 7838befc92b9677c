"""Scenarios and fault injection: every example runs on a fresh mount under scripts/leakwatch.sh,
which must flag exactly the leaking ones; the summary, the kernel log and the live view say what
happened. Plus the checks of scenario files and ``--fault`` options, and the faults' timing."""
from __future__ import annotations

import errno
import math
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT
from helpers.vpu_rig import (
    APP,
    CAP,
    OUT,
    Client,
    FakeClock,
    FakeMemTrack,
    start_decoder,
)

from memtrackfs.testing.helpers import Mount, start_mount
from vpu_sim import uapi
from vpu_sim.driver.accounting import Memory
from vpu_sim.driver.amphion.device import VpuDevice
from vpu_sim.driver.amphion.faults import Faults, parse_fault
from vpu_sim.driver.amphion.ioctls import VideoFile
from vpu_sim.driver.amphion.model import CoreKind
from vpu_sim.driver.memtrack import MemoryArea
from vpu_sim.scenario.library import builtin_scenarios
from vpu_sim.scenario.spec import load, parse

EXAMPLES = ROOT / "examples" / "scenarios"
LEAKWATCH = ROOT / "scripts" / "leakwatch.sh"
LEAKING = {"driver-leak", "keep-dmabufs", "rk3588-buggy-player"}
CONTROL = "sys/kernel/debug/dynamic_debug/control"
TIMED_OUT = r"exit 1: vpu-sim: (play|encode): VIDIOC_DQBUF: Connection timed out \(the driver did not answer"

# What each example's summary must show (regular expressions, each on one line of it).
SUMMARIES = {
    "clean": [r"^  display +play 1920x1080 h264 +\d+ +72733056 +ok$", r"^  background .* ok$",
              r"^  camera +encode 1280x720 +\d+ +29423616 +ok$", r"^amphion-vpu total: .*\(\+0\)$",
              r"^rk_dmabuf/size: before 0 KiB, after 0 KiB \(\+0\)$"],
    "driver-leak": [r"^  play .* ok$", r"^amphion-vpu total: before 44040192 bytes, after 54542720 bytes \(\+10502528\)$"],
    "keep-dmabufs": [r"^  display: handed 9 dma-bufs to helper pid \d+, which keeps them 30 s$",
                     r"^rk_dmabuf/size: before 0 KiB, after 32256 KiB \(\+32256\)$"],
    "crash": [r"^  victim +play 1920x1080 h264 +\S+ +\S+ +killed by SIGKILL \(crash fault\)$",
              r"^  survivor .* ok$", r"^rk_dmabuf/size: before 0 KiB, after 0 KiB \(\+0\)$"],
    "resolution-storm": [r"^  display .* ok$", r"^  display: [3-9] resolution changes$",
                         r"^rk_dmabuf/size: before 0 KiB, after 0 KiB \(\+0\)$"],
    "cma-exhaustion": [r"^  early .* ok$", r"^  late .* ok$",
                       r"^  starved .* - +exit 1: vpu-sim: play: VIDIOC_REQBUFS: Cannot allocate memory "
                       r"\(the CMA heap is full\)$"],
    "slow-firmware": [r"^  play +play 1920x1080 h264 +(2\d|3\d|4\d) +72733056 +ok$"],  # healthy: ~75
    "stuck-firmware": [r"^  play .* " + TIMED_OUT, r"^  camera .* " + TIMED_OUT],
    # The RK3588 board (docs/spec/rockchip-rk3588.md): a player's usage is its MPP session's buffers.
    "rk3588-home-screen": [r"^  home +compositor home screen +- +- +ok$",
                           r"^rk_dmabuf/size: before 0 KiB, after 0 KiB \(\+0\)$"],
    "rk3588-player": [r"^  player +play 3840x2160 hevc +\d+ +173072384 +ok$",
                      r"^rk_dmabuf/size: before 0 KiB, after 0 KiB \(\+0\)$"],
    "rk3588-buggy-player": [r"^  player: handed 4 dma-bufs to helper pid \d+, which keeps them 60 s$",
                            r"^rk_dmabuf/size: before 0 KiB, after 17504 KiB \(\+17504\)$"],
    "rk3588-peak": [r"^  player +play 7680x4320 hevc +\d+ +1412014080 +ok$",  # two 8K sessions at the switch
                    r"^rk_dmabuf/size: before 0 KiB, after 0 KiB \(\+0\)$"],
}
# What leakwatch's report must say besides its verdict.
REPORTS = {
    "driver-leak": [r"^  instance tgid=\d+ \(gone\): \+10502528 bytes$", r"^  mbi: \+6422528 bytes$",
                    r"^  dcp: \+4080000 bytes$", r"^leakwatch: LEAK: amphion-vpu grew by 10502528 bytes"],
    "keep-dmabufs": [r"^  dma-buf \d+-\S+ \(videobuf2_dma_co\): \+32256 KiB$",
                     r"^leakwatch: LEAK: rk_dmabuf/size grew by 32256 KiB$"],
    "rk3588-buggy-player": [r"^  dma-buf \d+-\S+ \(system\): \+17504 KiB$",
                            r"^leakwatch: LEAK: rk_dmabuf/size grew by 17504 KiB$"],
}
KEPT = {"keep-dmabufs": 32256, "rk3588-buggy-player": 17504}  # KiB a helper keeps after the scenario


def test_every_example_has_its_expectations() -> None:
    assert sorted(path.stem for path in EXAMPLES.glob("*.toml")) == sorted(SUMMARIES) == sorted(builtin_scenarios())


def test_the_built_in_scenarios_are_listed_and_found_by_name() -> None:
    done = subprocess.run([sys.executable, "-m", "vpu_sim", "scenario", "--list"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert sorted(listed) == sorted(SUMMARIES)
    assert listed["driver-leak"] == "The driver's release path forgets the decoder's MBI and DCP buffers"
    missing = subprocess.run([sys.executable, "-m", "vpu_sim", "scenario", "no-such-scenario"],
                             capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.startswith("vpu-sim: scenario: no-such-scenario: no such file, nor a built-in scenario "
                                     "(built-in: clean, cma-exhaustion, crash, driver-leak,")


@pytest.mark.parametrize("example", sorted(SUMMARIES))
def test_leakwatch_flags_exactly_the_leaking_examples(tmp_path: Path, example: str) -> None:
    # A short driver timeout keeps stuck-firmware short; nothing else waits that long.
    board = load(str(EXAMPLES / f"{example}.toml")).board
    rockchip = board == "rk3588"
    mount = start_mount(tmp_path, "--driver-timeout", "1", *(["--board", board] if rockchip else []))
    helper = None
    try:
        if not rockchip:
            (mount / CONTROL).write_text("file v4l2-memtrack.c +p\n")  # the RFC's leak report, on
        shell = ["busybox", "sh"] if example in ("driver-leak", "clean") else ["sh"]
        # By name: the built-in scenario.
        done = subprocess.run([*shell, str(LEAKWATCH), "-i", "0.2", "--", sys.executable, "-m", "vpu_sim", "scenario",
                               example, "--mount", str(mount.path)],
                              env={**os.environ, "ROOT": str(mount.path)}, capture_output=True, text=True, timeout=60)
        nodes = "rk3588: dev/mpp_service" if rockchip else "imx8qxp: decoder dev/video0, encoder dev/video1"
        assert done.stdout.startswith(f"vpu-sim: ready: {nodes} (pid "), done.stdout  # its first line
        handed = re.search(r"helper pid (\d+)", done.stdout)
        helper = int(handed.group(1)) if handed else None
        for pattern in SUMMARIES[example]:
            assert re.search(pattern, done.stdout, re.M), f"{pattern!r} not in the summary:\n{done.stdout}"
        for pattern in REPORTS.get(example, []):
            assert re.search(pattern, done.stderr, re.M), f"{pattern!r} not in the report:\n{done.stderr}"
        assert done.returncode == (1 if example in LEAKING else 0), done.stderr
        assert ("leakwatch: no leak" in done.stderr) == (example not in LEAKING)
        assert ("amphion-vpu total" in done.stdout) == (not rockchip)
        kmsg = mount.kmsg()
        if example == "driver-leak":
            assert any(line.endswith(";amphion-vpu: injected faults: driver-leak:names=mbi+dcp") for line in kmsg)
            report = [line.split(";", 1)[1] for line in kmsg if line.startswith("7,")]
            assert report[0] == "v4l2-memtrack: Memory Tracker: amphion-vpu"
            assert report.count("v4l2-memtrack:     mbi [leaf]: usage=917504 bytes, count=1") == 7
            assert report.count("v4l2-memtrack:     dcp [leaf]: usage=2040000 bytes, count=1") == 2
        else:
            assert not any("Memory Tracker" in line for line in kmsg)  # the driver went clean
        if example in KEPT:
            assert mount.read("proc/rk_dmabuf/size") == b"Total: %d KiB\n" % KEPT[example]  # held after the scenario
            os.kill(helper, signal.SIGTERM)
            _wait_gone(helper)
            helper = None
            assert mount.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n"
    finally:
        if helper is not None:
            os.kill(helper, signal.SIGKILL)
        mount.umount()


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} did not exit"


def test_a_scenario_refuses_a_mount_where_a_driver_runs(vpu_board: Mount) -> None:
    done = subprocess.run([sys.executable, "-m", "vpu_sim", "scenario", str(EXAMPLES / "clean.toml"),
                           "--mount", str(vpu_board.path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert f"a VPU driver already serves {vpu_board.path}/dev/video0" in done.stderr
    assert "instance" not in vpu_board.tree()  # nothing was started


def test_the_live_view_redraws_in_place_on_a_terminal(memtrackfs_mount: Mount, tmp_path: Path) -> None:
    scenario = tmp_path / "short.toml"
    scenario.write_text('settle = 0.2\n[[app]]\nkind = "play"\nsize = "640x480"\nseconds = 1\ncount = 2\n')
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "vpu_sim", "scenario", str(scenario), "--mount",
                             str(memtrackfs_mount.path)], stdout=terminal, stderr=terminal, stdin=subprocess.DEVNULL)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal's last writer has gone
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert proc.wait(30) == 0
    text = output.decode()
    # Two status lines redrawn: back up two lines (ESC [ 2 F), each line cleared to its end.
    assert text.count("\x1b[2F") > 5
    assert re.search(r"play-1 +play 640x480 h264 +running +frames +\d+", text)
    assert re.search(r"^  play-2 +play 640x480 h264 +\d+ +\d+ +ok\r?$", text, re.M)


# -- checking scenario files and --fault options ------------------------------------------------------
BAD_SCENARIOS = [
    ({}, "app is required"),
    ({"app": [{"kind": "play"}]}, "app 1: seconds is required"),
    ({"app": [{"kind": "play", "seconds": 1, "size": "1080p"}]}, "app 1: size: a size looks like 1920x1080, not '1080p'"),
    ({"app": [{"kind": "play", "seconds": 1, "sise": "1x1"}]}, "app 1: unknown key 'sise'"),
    ({"app": [{"kind": "encode", "seconds": 1, "codec": "hevc"}]}, "app 1: codec: an encode always produces h264"),
    ({"app": [{"kind": "play", "seconds": 1}], "fault": [{"kind": "crash", "app": "nobody", "at": 1}]},
     "fault 1 (crash): app: no app is named 'nobody' (apps: play)"),
    ({"app": [{"kind": "play", "seconds": 1}], "fault": [{"kind": "keep-dmabufs", "app": "play"}]},
     "fault 1 (keep-dmabufs): app 'play' exports nothing: give it export_to"),
    ({"app": [{"kind": "play", "seconds": 1}], "fault": [{"kind": "driver-leak", "names": ["fw"]}]},
     "fault 1: driver-leak: names: 'fw' is no internal buffer"),
    ({"app": [{"kind": "play", "seconds": 1}], "fault": [{"kind": "meltdown"}]}, "fault 1: kind must be one of"),
    ({"app": [{"kind": "play", "seconds": 1}], "fault": [{"kind": "stuck-firmware"}, {"kind": "stuck-firmware"}]},
     "fault 'stuck-firmware' given more than once"),
    ({"app": [{"kind": "encode", "seconds": 1, "name": "cam"}, {"kind": "play", "seconds": 1, "name": "cam"}]},
     "two apps are named 'cam'"),
]


@pytest.mark.parametrize("data, message", BAD_SCENARIOS, ids=[m for _, m in BAD_SCENARIOS])
def test_a_bad_scenario_is_refused_naming_the_entry_and_key(data: dict, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse(data, "s.toml")
    assert str(refused.value).startswith("s.toml: ") and message in str(refused.value)


def test_scenario_entries_expand_and_driver_faults_reach_the_daemon_shifted_by_settle() -> None:
    scenario = parse({"settle": 0.5, "app": [{"kind": "play", "seconds": 1, "count": 2},
                                             {"kind": "play", "seconds": 2, "export_to": "display-subsystem"}],
                      "fault": [{"kind": "stuck-firmware", "at": 1.5}, {"kind": "crash", "app": "play1", "at": 0.5}]},
                     "s.toml")
    assert [(app.name, app.crash_at) for app in scenario.apps] == [("play1-1", 0.5), ("play1-2", 0.5), ("play2", None)]
    assert scenario.daemon_args()[-2:] == ["--fault", "stuck-firmware:at=2"]
    assert "--export-to" in scenario.apps[2].command("/mnt")


def test_the_cli_reports_a_bad_file_and_bad_faults_as_usage_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[app]]\nkind = 'play'\nseconds = 'long'\n")
    done = subprocess.run([sys.executable, "-m", "vpu_sim", "scenario", str(bad)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == f"vpu-sim: scenario: {bad}: app 1: seconds: expected a number, not 'long'\n"
    done = subprocess.run([sys.executable, "-m", "vpu_sim", "daemon", "--fault", "driver-leak:names=mbi+fw"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "argument --fault: driver-leak: names: 'fw' is no internal buffer" in done.stderr


def test_fault_options_print_back_as_they_parse() -> None:
    for text in ("driver-leak:names=mbi+dcp", "slow-firmware:frame_ms=250,at=2", "stuck-firmware",
                 "resolution-storm:every_ms=500,sizes=1280x720+1920x1080,seconds=3"):
        assert str(parse_fault(text)) == text


# -- the driver's hooks, against an in-memory tracker -------------------------------------------------
def test_firmware_faults_time_frames_from_the_probe() -> None:
    faults = Faults.build([parse_fault("slow-firmware:frame_ms=250,at=1,seconds=2"),
                           parse_fault("stuck-firmware:at=5,seconds=1"),
                           parse_fault("resolution-storm:every_ms=500,sizes=1280x720+1920x1080,at=10")], origin=100.0)
    assert faults.frame_period(0.04, 100.5) == 0.04 and faults.frame_period(0.04, 101.5) == 0.25
    assert faults.frame_period(0.04, 103.0) == 0.04                   # the window has ended
    assert faults.completion(104.9) == 104.9 and faults.completion(105.2) == 106.0
    assert math.isinf(Faults.build([parse_fault("stuck-firmware")], origin=0.0).completion(3.0))
    assert faults.stream_size(110.2) is None                          # the storm's first period
    assert [faults.stream_size(t) for t in (110.6, 111.1, 111.6)] == [(1280, 720), (1920, 1080), (1280, 720)]


def _rig(*faults: str) -> tuple[FakeMemTrack, FakeClock, MemoryArea, Client]:
    """A decoder whose driver runs with ``faults``, probed now."""
    memtrack, clock, cma = FakeMemTrack(), FakeClock(), MemoryArea("cma")
    device = VpuDevice(Memory(memtrack, cma, cma), clock=clock,
                       faults=Faults.build([parse_fault(f) for f in faults], origin=clock.now))
    return memtrack, clock, cma, Client(VideoFile(device, CoreKind.DECODER, APP))


def test_a_driver_leak_leaves_the_instance_with_the_named_buffers() -> None:
    memtrack, clock, cma, client = _rig("driver-leak:names=mbi+dcp")
    start_decoder(client)
    node = client.file.instance.node
    client.file.release()
    assert node in memtrack.nodes and node not in memtrack.watches    # forgotten, not destroyed
    assert sorted({name for name, _, _ in memtrack.nodes[node].leaves}) == ["dcp", "mbi"]
    assert memtrack.usage(node) == 7 * 917_504 + 2 * 2_040_000 == cma.used  # still allocated


def test_a_stuck_firmware_that_recovers_completes_frames_again() -> None:
    memtrack, clock, cma, client = _rig("stuck-firmware:at=0.15,seconds=2")
    start_decoder(client)
    for index in range(1, 8):
        assert client.qbuf(OUT, index, 5000) == 0
    clock.now += 1.0
    # The header is parsed at 1/30 s; frames at 1/30, ..., 4/30 s complete; the one due at 5/30 s
    # waits for the recovery.
    assert [client.dqbuf(CAP)[0] for _ in range(7)] == [0] * 4 + [errno.EAGAIN] * 3
    assert client.file.instance.next_event_time() == pytest.approx(1000.0 + 0.15 + 2)  # the window's end
    clock.now += 1.2
    assert client.dqbuf(CAP)[0] == 0


def test_a_resolution_storm_ends_capture_with_last_and_reallocates_mbi() -> None:
    memtrack, clock, cma, client = _rig("resolution-storm:every_ms=500,sizes=1280x720")
    start_decoder(client)
    node = client.file.instance.node
    assert memtrack.leaves(node, "mbi") == [917_504] * 7
    clock.now += 0.6
    err, buf, _ = client.dqbuf(CAP)
    while not buf.flags & uapi.V4L2_BUF_FLAG_LAST:                    # frames up to the change
        err, buf, _ = client.dqbuf(CAP)
    assert err == 0
    assert (client.g_fmt(CAP).width, client.g_fmt(CAP).height) == (1280, 720)
    assert memtrack.leaves(node, "mbi") and set(memtrack.leaves(node, "mbi")) != {917_504}
