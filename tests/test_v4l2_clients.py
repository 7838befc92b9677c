"""Real V4L2 clients nobody here wrote, on the emulated VPU inside ``memtrackfs run``.

Debian 12's v4l-utils 1.22.1 (v4l2-compliance, v4l2-ctl) and FFmpeg 5.1 (h264_v4l2m2m), as
scripts/install.sh installs them, find the nodes through sysfs and the media device, stream
through mmap()ed buffers with poll()/select()/epoll, and get what a board gives them: the tests
assert on what the tools print. The H.264 clips are made at test time by FFmpeg's libx264.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from vpu_sim.driver.amphion.model import nv12m_8l128_plane_sizes

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
TREE = "/sys/kernel/debug/v4l2-memtrack/amphion-vpu"
# What v4l2-ctl writes per decoded frame: both planes of the 8L128 tiled frame (the model's sizes).
FRAME_720P = sum(nv12m_8l128_plane_sizes(1280, 720))
FRAME_1080P = sum(nv12m_8l128_plane_sizes(1920, 1088))


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: scripts/install.sh installs v4l-utils and ffmpeg"
    return path


def run(script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``script`` (sh) inside memtrackfs run, with the VPU; output as text."""
    return subprocess.run([sys.executable, "-m", "memtrackfs", "run", "--", "sh", "-c", script],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30-frame H.264 clips at 720p and 1080p and 20 raw NV12 720p frames, made by FFmpeg."""
    ffmpeg = tool("ffmpeg")
    where = tmp_path_factory.mktemp("clips")
    for name, size in (("720p.h264", "1280x720"), ("1080p.h264", "1920x1080")):
        subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=30",
                        "-frames:v", "30", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "h264", str(where / name)],
                       check=True)
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=1280x720:rate=30",
                    "-frames:v", "20", "-pix_fmt", "nv12", "-f", "rawvideo", str(where / "720p.nv12")], check=True)
    return where


def totals(output: str) -> list[tuple[str, int, int, int]]:
    """v4l2-compliance's closing lines: (device, tests, succeeded, failed)."""
    return [(m[1], int(m[2]), int(m[3]), int(m[4])) for m in
            re.finditer(r"Total for amphion-vpu device (\S+): (\d+), Succeeded: (\d+), Failed: (\d+)", output)]


def test_v4l2_compliance_passes_on_both_nodes() -> None:
    tool("v4l2-compliance")
    done = run("v4l2-compliance -d /dev/video0; v4l2-compliance -d /dev/video1")
    assert totals(done.stdout) == [("/dev/video0", 46, 46, 0), ("/dev/video1", 46, 46, 0)], done.stdout[-3000:]
    assert "Detected Stateful Decoder" in done.stdout and "Detected Stateful Encoder" in done.stdout
    assert "of entity 'amphion-vpu-decoder-proc' (Video Decoder)" in done.stdout  # through the media device
    assert "test VIDIOC_(UN)SUBSCRIBE_EVENT/DQEVENT: OK" in done.stdout


def test_v4l2_compliance_streams_on_mmap_on_both_nodes() -> None:
    done = run("v4l2-compliance -s -d /dev/video0; v4l2-compliance -s -d /dev/video1", timeout=600)
    assert totals(done.stdout) == [("/dev/video0", 51, 51, 0), ("/dev/video1", 51, 51, 0)], done.stdout[-3000:]
    assert done.stdout.count("test MMAP (select): OK") == 2 and done.stdout.count("test MMAP (epoll): OK") == 2
    assert done.stdout.count("Video Capture Multiplanar: Captured 60 buffers") == 4


def test_v4l2_ctl_finds_and_describes_the_nodes() -> None:
    tool("v4l2-ctl")
    done = run("v4l2-ctl --list-devices; v4l2-ctl -d /dev/video0 --all; v4l2-ctl -d /dev/video1 --list-ctrls;"
               " v4l2-ctl -d /dev/video0 --get-ctrl=memory_usage; cat /sys/class/video4linux/video1/name")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "amphion vpu decoder (platform: amphion-vpu):\n\t/dev/video0\n\t/dev/video1\n\t/dev/media0\n" in out
    assert "Driver name      : amphion-vpu" in out and "Card type        : amphion vpu decoder" in out
    assert "Pixel Format      : 'H264' (H.264)" in out
    assert re.search(r"h264_profile 0x00990a6b \(menu\)\s+: min=0 max=4 default=4 value=4", out)
    assert re.search(r"memory_usage 0x0098092c \(int64\)\s+: min=0 max=9223372036854775807", out)
    assert "memory_usage: 0\n" in out  # its own open: an instance that holds nothing yet
    assert out.endswith("amphion-vpu-encoder\n")


@pytest.mark.parametrize("size,frame", [("1280x720", FRAME_720P), ("1920x1080", FRAME_1080P)])
def test_v4l2_ctl_decodes_every_frame_handling_the_source_change(clips: Path, tmp_path: Path, size: str,
                                                                  frame: int) -> None:
    width, height = size.split("x")
    clip = clips / ("720p.h264" if width == "1280" else "1080p.h264")
    out = tmp_path / "decoded.na12"
    done = run(f"v4l2-ctl -d /dev/video0 --set-fmt-video-out=width={width},height={height},pixelformat=H264"
               f" --stream-out-mmap=8 --stream-mmap=8 --stream-from={clip} --stream-to={out}")
    assert done.returncode == 0, done.stderr
    assert "SOURCE CHANGE EVENT" in done.stderr and "STOP DECODER" in done.stderr
    assert done.stderr.count("<") == 30 and out.stat().st_size == 30 * frame


def test_v4l2_ctl_encodes_raw_nv12(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "encoded.h264"
    done = run("v4l2-ctl -d /dev/video1 --set-fmt-video-out=width=1280,height=720,pixelformat=NM12"
               f" --set-fmt-video=pixelformat=H264 --stream-out-mmap --stream-mmap"
               f" --stream-from={clips / '720p.nv12'} --stream-to={out}")
    assert done.returncode == 0, done.stderr
    assert "EOS EVENT" in done.stderr
    # One K (key) or P per encoded frame, on the progress lines (not "STOP ENCODER").
    marks = "".join(line for line in done.stderr.splitlines() if re.fullmatch(r"[<>KPB]*", line))
    assert marks.count("K") == 1 and marks.count("K") + marks.count("P") == 20
    assert out.stat().st_size > 0


def test_ffmpeg_encodes_through_the_encoder(tmp_path: Path) -> None:
    tool("ffmpeg")
    out = tmp_path / "out.h264"
    done = run("ffmpeg -hide_banner -y -f lavfi -i testsrc=size=1280x720:rate=30 -frames:v 60 -pix_fmt nv12"
               f" -c:v h264_v4l2m2m -b:v 2M -f h264 {out}; echo status $?; memtrackfs settle; cat {TREE}")
    assert "status 0" in done.stdout, done.stderr[-3000:]
    assert "Lavc59.37.100 h264_v4l2m2m" in done.stderr and re.search(r"frame=\s*60 ", done.stderr)
    assert out.stat().st_size > 0
    assert "  instance " not in done.stdout  # closed: its instance went with it (once its release is done)


def test_ffmpeg_decoding_fails_as_on_an_imx8_and_leaves_nothing(clips: Path) -> None:
    """FFmpeg 5.1 negotiates the Amphion's NA12 capture format without knowing it (its reinit
    TRY_FMTs MJPEG, which the driver answers with NA12), then every frame fails in
    av_frame_apply_cropping() for want of a pixel format: README."""
    done = run(f"ffmpeg -hide_banner -y -c:v h264_v4l2m2m -i {clips / '1080p.h264'} -f null -;"
               f" echo status $?; memtrackfs settle; cat {TREE}")
    assert "Using device /dev/video0" in done.stderr  # the probe passes: TRY_FMT(YU12) gives NA12
    assert "requesting formats: output=H264 capture=NA12" in done.stderr
    assert "Error while decoding stream #0:0: Internal bug, should not have happened" in done.stderr
    # 69: FFmpeg's exit status when decoding errors exceed -max_error_rate (all of them here).
    assert "Output file is empty, nothing was encoded" in done.stderr and "status 69" in done.stdout
    assert "  instance " not in done.stdout


def test_a_client_sees_its_instance_and_a_killed_one_leaves_nothing(clips: Path) -> None:
    """While v4l2-ctl decodes, the tree shows its instance with its tgid/pid; SIGKILLed, nothing stays."""
    script = (f"v4l2-ctl -d /dev/video0 --set-fmt-video-out=width=1920,height=1080,pixelformat=H264"
              f" --stream-out-mmap=8 --stream-mmap=8 --stream-from={clips / '1080p.h264'} --stream-loop"
              f" --stream-to=/dev/null 2>/dev/null & client=$!;"
              f" until grep -q \"instance (tgid=$client, pid=$client)\" {TREE} &&"
              f" grep -q '^    mbi \\[leaf\\]' {TREE}; do :; done;"
              f" echo client $client; cat {TREE}; kill -KILL $client; wait $client;"
              f" until ! grep -q '  instance ' {TREE}; do :; done; echo after; cat {TREE}")
    done = run(script)
    client = re.search(r"client (\d+)", done.stdout)[1]
    during, after = done.stdout.split("after\n")
    assert f"  instance (tgid={client}, pid={client}) usage: " in during
    assert "    bitstream-ring-buffer [leaf]" in during and "    mbi [leaf]" in during
    assert "instance" not in after and "Total memory usage: 44040192 bytes" in after
