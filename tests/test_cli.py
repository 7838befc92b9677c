"""The commands speak clearly: --help with descriptions, defaults and examples, --version, errors
that name their file, a failed mount that says why, tools that say when there is nothing to read."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from memtrackfs.testing.helpers import Mount, memtrackfs, start_mount

MEMTRACKFS = ["mount", "umount", "run", "settle", "snapshot", "diff", "record", "plot", "metrics", "replay", "capture",
              "load", "scripts"]
VPU_SIM = ["daemon", "play", "encode", "transcode", "hold", "scenario"]


def vpu_sim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vpu_sim", *args], capture_output=True, text=True)


@pytest.mark.parametrize("command", MEMTRACKFS)
def test_every_memtrackfs_command_has_a_description_defaults_and_an_example(command: str) -> None:
    text = memtrackfs(command, "--help").stdout.decode()
    usage, description = text.split("\n\n", 2)[:2]
    assert usage.startswith(f"usage: memtrackfs {command}") and len(description) > 20, text
    assert "\nexamples:\n  " in text and f"memtrackfs {command}" in text.split("\nexamples:\n")[1], text
    if "--mount" in text and command not in ("replay", "settle", "load"):
        assert "(default: /, the real paths" in " ".join(text.split()), text


@pytest.mark.parametrize("command", VPU_SIM)
def test_every_vpu_sim_command_has_a_description_defaults_and_an_example(command: str) -> None:
    done = vpu_sim(command, "--help")
    text = " ".join(done.stdout.split())
    assert done.returncode == 0 and f"examples: vpu-sim {command}" in text, done.stdout
    assert "--mount MNT the memtrackfs mount point (default: / ," in text
    if command in ("play", "encode", "transcode"):
        assert "(default: 1920x1080)" in text and "(default: 10)" in text


def test_versions() -> None:
    assert memtrackfs("--version").stdout == b"memtrackfs 0.1.0\n"
    assert vpu_sim("--version").stdout == "vpu-sim 0.1.0\n"


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    done = memtrackfs("diff", str(missing), str(missing), check=False)
    # diff's trouble is 2, as diff(1)'s: 1 says that something grew.
    assert (done.returncode, done.stderr.decode()) == (2, f"memtrackfs: diff: {missing}: No such file or directory\n")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    done = memtrackfs("diff", str(bad), str(bad), check=False)
    assert done.returncode == 2 and done.stderr.decode().startswith(f"memtrackfs: diff: {bad}: not JSON: ")
    done = memtrackfs("record", "--mount", str(tmp_path), "--out", str(tmp_path / "no/dir/r.jsonl"), check=False)
    assert done.returncode == 1  # nothing to read there, said before anything is written
    done = memtrackfs("replay", str(tmp_path / "t.trace"), "--mount", str(tmp_path), check=False)
    assert done.stderr.decode() == f"memtrackfs: replay: {tmp_path / 't.trace'}: No such file or directory\n"
    done = vpu_sim("scenario", str(tmp_path / "s.toml"))
    assert (done.returncode, done.stderr) == (
        2, f"vpu-sim: scenario: {tmp_path / 's.toml'}: No such file or directory\n")


def test_snapshot_and_record_where_there_are_no_files_say_so(tmp_path: Path) -> None:
    for command in (["snapshot"], ["record", "--out", str(tmp_path / "r.jsonl"), "--duration", "1"]):
        done = memtrackfs(*command, "--mount", str(tmp_path), check=False)
        assert done.returncode == 1
        assert done.stderr.decode() == (
            f"memtrackfs: {command[0]}: none of the files to read is there ({tmp_path}/sys/kernel/debug/v4l2-memtrack: "
            f"No such file or directory; {tmp_path}/proc/rk_dmabuf/size: No such file or directory): this machine has "
            "neither the v4l2-memtrack RFC nor Rockchip's rk_dmabuf; for a mount, give --mount MNT\n")
    assert not (tmp_path / "r.jsonl").exists()


def test_a_failed_mount_says_why_on_the_terminal(tmp_path: Path) -> None:
    """In a private mount namespace /dev/fuse is an empty file: libfuse's mount fails, and its
    reason, which goes to the daemon's log, is on the terminal too."""
    fake = tmp_path / "not-fuse"
    fake.write_text("")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           f'mount --bind {fake} /dev/fuse && exec "$@"', "sh", sys.executable, "-m", "memtrackfs",
                           "mount", str(tmp_path / "mnt"), "--socket", str(tmp_path / "s.sock")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == (f"memtrackfs: mount failed: fuse: mount failed: Invalid argument "
                           f"(daemon log: {tmp_path / 's.log'})\n")


@pytest.mark.parametrize("argv, usage, error", [
    (["memtrackfs", "run", "--bsp", "6.1", "--", "true"], "usage: memtrackfs run ",
     "memtrackfs run: error: --bsp is for --board rk3588 (its BSP kernels), not union"),
    (["memtrackfs", "run"], "usage: memtrackfs run ", "memtrackfs run: error: no COMMAND given"),
    (["vpu_sim", "play", "--playlist", "2", "--mount", "/nonexistent"], "usage: vpu-sim play ",
     "vpu-sim play: error: --playlist is for the rk3588 player"),
    (["vpu_sim", "play", "--keep-exports", "5"], "usage: vpu-sim play ",
     "vpu-sim play: error: --keep-exports needs --export-to"),
    (["vpu_sim", "scenario"], "usage: vpu-sim scenario ", "vpu-sim scenario: error: give a SCENARIO"),
    (["memtrackfs", "settle", "--timeout", "3601", "--mount", "/nonexistent"], "usage: memtrackfs settle ",
     "memtrackfs settle: error: argument --timeout: '3601': expected seconds from 0 to 3600 (an hour)"),
    (["memtrackfs", "settle", "--timeout", "nan"], "usage: memtrackfs settle ",
     "memtrackfs settle: error: argument --timeout: 'nan': expected seconds from 0 to 3600 (an hour)"),
])
def test_a_usage_error_found_after_parsing_shows_its_commands_usage(argv: list[str], usage: str, error: str) -> None:
    """As argparse does for the errors it finds itself (`vpu-sim play --size 12`)."""
    done = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith(usage) and f"\n{error}" in done.stderr, done.stderr


def test_vpu_sim_talks_to_the_mount_given_and_inside_a_run_to_the_runs_own(memtrackfs_mount: Mount,
                                                                          tmp_path: Path) -> None:
    """As memtrackfs's --mount: an explicit mount wins over $MEMTRACKFS_SOCKET (set inside
    `memtrackfs run`); the default, /, is the run's own. A buffer only the other mount has tells
    which socket `vpu-sim hold` spoke to."""
    other = start_mount(tmp_path / "other")
    try:
        with other.client() as client:
            buffer = client.call("heap_alloc", heap="system", bytes=1 << 20)["buffer"]
            inside_run = {**os.environ, "MEMTRACKFS_SOCKET": str(memtrackfs_mount.socket)}
            done = subprocess.run([sys.executable, "-m", "vpu_sim", "hold", "--mount", str(other.path),
                                   "--seconds", "0", str(buffer)], capture_output=True, text=True, env=inside_run)
            assert (done.returncode, done.stdout) == (0, "holding 1 dma-bufs for 0 s\n"), done.stderr
            inside_run["MEMTRACKFS_SOCKET"] = str(other.socket)
            done = subprocess.run([sys.executable, "-m", "vpu_sim", "hold", "--seconds", "0", str(buffer)],
                                  capture_output=True, text=True, env=inside_run)
            assert (done.returncode, done.stdout) == (0, "holding 1 dma-bufs for 0 s\n"), done.stderr
    finally:
        other.umount()
