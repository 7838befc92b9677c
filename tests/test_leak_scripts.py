"""scripts/leakwatch.sh and scripts/rk-peak.sh, under dash and busybox sh, against real mounts:
what they report, their verdicts and exit statuses, their usage. (tests/test_scenarios.py runs
leakwatch.sh around every example scenario.)"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT
from helpers.board_files import MEMTRACK, X_BYTES, amphion_tree, write_board

from memtrackfs.testing.helpers import Mount, wait_for

LEAKWATCH = str(ROOT / "scripts" / "leakwatch.sh")
RK_PEAK = str(ROOT / "scripts" / "rk-peak.sh")
SHELLS = [["sh"], ["busybox", "sh"]]
MIB = 1 << 20


def run(shell: list[str], script: str, *args: str, root: Path | str = "", stdin: str = "",
        timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*shell, script, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "ROOT": str(root)})


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
@pytest.mark.parametrize("script, args, complaint", [
    (LEAKWATCH, [], "nothing to run: give -- COMMAND or -d SECONDS"),
    (LEAKWATCH, ["-t", "1.5", "--", "true"], "-t takes whole KiB, not '1.5'"),
    (LEAKWATCH, ["-i", "0", "--", "true"], "-i takes seconds > 0, not '0'"),
    (LEAKWATCH, ["-d", "1", "--", "true"], "give either -d SECONDS or -- COMMAND, not both"),
    (LEAKWATCH, ["-x"], ""),
    (RK_PEAK, [], "nothing to run: give -- COMMAND"),
    (RK_PEAK, ["-l", "lots", "--", "true"], "-l takes whole MiB, not 'lots'"),
])
def test_bad_arguments_print_the_usage_and_exit_2(shell: list[str], script: str, args: list[str],
                                                  complaint: str) -> None:
    done = run(shell, script, *args)
    assert done.returncode == 2
    assert complaint in done.stderr
    assert f"usage: {Path(script).name} [" in done.stderr
    assert done.stdout == ""


def test_without_the_files_there_is_nothing_to_watch(tmp_path: Path) -> None:
    done = run(["busybox", "sh"], LEAKWATCH, "--", "true", root=tmp_path)
    assert done.returncode == 3
    assert f"nothing to watch: neither {tmp_path}/proc/rk_dmabuf/size nor" in done.stderr
    done = run(["sh"], RK_PEAK, "--", "true", root=tmp_path)
    assert done.returncode == 3
    assert f"{tmp_path}/proc/rk_dmabuf/peak does not exist" in done.stderr


# A process that leaves memory in a tracker root: an instance (a node under the root, with its
# tgid) holding a named leaf, and a buffer of the root's own. What a connection made outlives it.
LEAVE_BEHIND = r"""
import sys
from memtrackfs.client import MemtrackClient
with MemtrackClient(sys.argv[1]) as mt:
    root = next(r["node"] for r in mt.call("roots")["roots"] if r["name"] == "leaky")
    instance = mt.call("node", parent=root, name="instance")["node"]
    mt.call("add", node=instance, bytes=8192, name="mbi")
    mt.call("add", node=root, bytes=4096, name="fw")
print(sys.stdin.read().upper(), end="")
"""


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
def test_leakwatch_reports_what_a_command_left_per_instance_and_name(mount: Mount, shell: list[str]) -> None:
    with mount.client() as mt:
        root = mt.call("root", name="leaky")["node"]
        mt.call("add", node=root, bytes=1 << 20, name="fw")   # there before: the baseline
        command = ["--", sys.executable, "-c", LEAVE_BEHIND, str(mount.socket)]
        done = run(shell, LEAKWATCH, "-i", "0.1", *command, root=mount.path, stdin="piped in\n")
        assert done.returncode == 1, done.stderr
        assert done.stdout == "PIPED IN\n"                        # the command had our stdin
        report = done.stderr
        assert re.search(r"^  instance tgid=\d+ \(gone\): \+8192 bytes$", report, re.M), report
        assert "\n  mbi: +8192 bytes\n" in report
        assert "\n  leaky own buffers: +4096 bytes\n" in report   # the root was there before and after
        assert "leakwatch: LEAK: leaky grew by 12288 bytes (12 KiB)" in report
        assert "rk_dmabuf/size: before 0 KiB, peak 0 KiB, after 0 KiB: +0 KiB" in report
        # Within a threshold of 12 KiB it is no leak: the same growth again passes.
        done = run(shell, LEAKWATCH, "-t", "12", "-i", "0.1", *command, root=mount.path)
        assert done.returncode == 0, done.stderr
        assert "leakwatch: LEAK" not in done.stderr and done.stderr.endswith("leakwatch: no leak\n")


def _first_sample_taken(tmp: Path) -> bool:
    """leakwatch (its TMPDIR ``tmp``) has taken its first sample: its second one has begun."""
    return any("@\t2\n" in samples.read_text() for samples in tmp.glob("leakwatch.*/samples"))


def test_leakwatch_for_a_duration_catches_dma_bufs_kept_and_not_those_freed(mount: Mount, tmp_path: Path) -> None:
    with mount.client(client="") as mt:
        first, second = tmp_path / "first", tmp_path / "second"
        first.mkdir(), second.mkdir()
        watch = subprocess.Popen(["busybox", "sh", LEAKWATCH, "-i", "0.2", "-d", "1.2"], stderr=subprocess.PIPE,
                                 text=True, env={**os.environ, "ROOT": str(mount.path), "TMPDIR": str(first)})
        wait_for(lambda: _first_sample_taken(first), what="leakwatch's first sample")
        buffer = mt.call("export", exporter="test-exporter", bytes=2 * MIB)["buffer"]
        _, report = watch.communicate(timeout=30)
        assert watch.returncode == 1, report
        assert re.search(r"^  dma-buf \d+-\S+ \(test-exporter\): \+2048 KiB$", report, re.M), report
        assert "rk_dmabuf/size: before 0 KiB, peak 2048 KiB, after 2048 KiB: +2048 KiB" in report
        assert "leakwatch: LEAK: rk_dmabuf/size grew by 2048 KiB" in report
        # Freed during the watch: shrinking is no leak.
        watch = subprocess.Popen(["sh", LEAKWATCH, "-i", "0.2", "-d", "0.8"], stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "ROOT": str(mount.path), "TMPDIR": str(second)})
        wait_for(lambda: _first_sample_taken(second), what="leakwatch's first sample")
        mt.call("put", buffer=buffer)
        _, report = watch.communicate(timeout=30)
        assert watch.returncode == 0, report
        assert "after 0 KiB: -2048 KiB" in report and report.endswith("leakwatch: no leak\n")


def test_a_failed_command_is_exit_4_when_nothing_leaked(mount: Mount) -> None:
    done = run(["sh"], LEAKWATCH, "-i", "0.1", "--", "sh", "-c", "exit 3", root=mount.path)
    assert done.returncode == 4
    assert done.stderr.endswith("leakwatch: the command failed (exit status 3); nothing leaked\n")
    done = run(["busybox", "sh"], RK_PEAK, "--", "false", root=mount.path)
    assert done.returncode == 4
    assert "rk-peak: peak 0 MiB; total now 0 KiB" in done.stderr


def test_rk_peak_resets_the_peak_and_measures_a_decode_exporting_its_frames(vpu_board: Mount) -> None:
    with vpu_board.client() as mt:   # an old, higher peak that the workflow must reset first
        mt.call("put", buffer=mt.call("export", exporter="old", bytes=100 * MIB)["buffer"])
    assert vpu_board.read("proc/rk_dmabuf/peak") == b"Peak: 100 MiB\n"
    # 1080p H.264: 9 CAPTURE buffers of 3,670,016 bytes exported: 33,030,144 bytes, 31 MiB.
    play = ["--", sys.executable, "-m", "vpu_sim", "play", "--mount", str(vpu_board.path), "--seconds", "0.3",
            "--export-to", "display-subsystem"]
    done = run(["busybox", "sh"], RK_PEAK, "-l", "30", *play, root=vpu_board.path)
    assert done.returncode == 1, done.stderr
    assert "rk-peak: peak 31 MiB (limit 30 MiB); total now 0 KiB\n" in done.stderr
    assert "rk-peak: OVER THE LIMIT: 31 MiB > 30 MiB" in done.stderr
    done = run(["sh"], RK_PEAK, "-l", "31", *play, root=vpu_board.path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "rk-peak: peak 31 MiB (limit 31 MiB); total now 0 KiB\n"


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
def test_leakwatch_on_a_boards_files_reads_each_line_from_its_end(shell: list[str], tmp_path: Path) -> None:
    """A board's files with names that look like fields (helpers.board_files): 64 MiB more in the
    instance named "  b" and in the node named "x (tgid=666, pid=666)" of instance 2001. Each is
    charged to its own instance, and the names are reported whole."""
    write_board(tmp_path)
    after = tmp_path / "after"
    after.write_text(amphion_tree(x_bytes=2 * X_BYTES, b_bytes=4096 + X_BYTES))
    grow = f"cp '{after}' '{tmp_path / MEMTRACK / 'amphion-vpu'}'"
    done = run(shell, LEAKWATCH, "-i", "0.2", "--", "sh", "-c", grow, root=tmp_path)
    report = done.stderr
    assert done.returncode == 1, report
    assert re.search(r"^  instance tgid=3003( \(gone\))?: \+67108864 bytes$", report, re.M), report
    assert re.search(r"^  instance tgid=2001( \(gone\))?: \+67108864 bytes$", report, re.M), report
    assert "  x (tgid=666, pid=666): +67108864 bytes" in report and "tgid=666:" not in report
    assert "  amphion-vpu own buffers" not in report
    assert "leakwatch: LEAK: amphion-vpu grew by 134217728 bytes (131072 KiB)" in report
    assert "v4l2-memtrack/a\\nb: total 5" in report
