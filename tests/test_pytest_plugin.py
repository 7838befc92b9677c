"""The pytest plugin, used as a user would: pytest run on the README's example test file, with
options from the command line and an ini file, under pytest-xdist, and on a machine without FUSE."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
from helpers import ROOT

from memtrackfs.mounts import read_mounts

FAILING = '''
def test_fails_after_mounting(vpu_board):
    assert (vpu_board / "dev/video0").exists()
    raise AssertionError("on purpose")
'''

# Each test says where its mount, socket and daemon were, and in which xdist worker it ran.
RECORDING = '''
import json, os, pathlib, pytest

@pytest.mark.parametrize("n", range(4))
def test_records_its_board(vpu_board, n):
    with vpu_board.client() as client:
        daemon = client.server["pid"]
    record = {"worker": os.environ.get("PYTEST_XDIST_WORKER"), "mount": str(vpu_board.path),
              "socket": str(vpu_board.socket), "daemon": daemon, "driver": vpu_board.driver.pid}
    pathlib.Path(os.environ["RECORDS"], f"{n}.json").write_text(json.dumps(record))
'''

OPTIONS = '''
import psutil

def test_the_options_reach_the_mount_and_the_daemon(vpu_board):
    assert vpu_board.read("proc/rk_dma_heap/alloc_bitmap").startswith(b"Total: 65536 KiB\\n")
    assert any(line.endswith(";amphion-vpu: imx8qm probed, decoder dev/video0, encoder dev/video1, "
                             "dma-contig vb2 planes") for line in vpu_board.kmsg())
    with vpu_board.client() as client:
        cmdline = psutil.Process(client.server["pid"]).cmdline()
    assert cmdline[cmdline.index("--driver-timeout") + 1] == "2.5"
'''

# The rk3588: the factory mounts that board's files for its MPP driver; a scenario gets its board's.
RK3588 = '''
def test_an_rk3588_board(memtrackfs_factory):
    board = memtrackfs_factory(board="rk3588", bsp="6.1")
    assert (board / "dev/mpp_service").exists() and (board / "proc/mpp_service/load").exists()
    assert not (board / "sys/kernel/debug/v4l2-memtrack").exists()
    assert board.driver.output().startswith("vpu-sim: ready: rk3588: dev/mpp_service (pid ")

def test_an_rk3588_scenario(memtrackfs_scenario):
    result = memtrackfs_scenario("rk3588-home-screen")
    assert result.returncode == 0, result.errors
    assert result.summary.startswith("vpu-sim: ready: rk3588: dev/mpp_service (pid ")
    assert "rk_dmabuf/size: before 0 KiB, after 0 KiB (+0)" in result.summary
    assert (result.mount / "proc/mpp_service").is_dir()
'''


def run_pytest(path: Path, tmp_path: Path, *args: str, cwd: Path | None = None, env: dict | None = None,
               prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(path),
                           "--basetemp", str(tmp_path / "base"), *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_the_readme_examples_pass(tmp_path: Path) -> None:
    done = run_pytest(ROOT / "examples/test_player_example.py", tmp_path)
    assert done.returncode == 0 and "3 passed" in done.stdout, done.stdout + done.stderr


def test_a_failing_test_still_tears_everything_down(tmp_path: Path) -> None:
    test_file = tmp_path / "test_fails.py"
    test_file.write_text(FAILING)
    done = run_pytest(test_file, tmp_path)
    assert done.returncode == 1 and "on purpose" in done.stdout
    assert not [m for m in read_mounts() if m.mountpoint.startswith(str(tmp_path))]


def test_under_xdist_each_worker_has_its_own_mounts_and_sockets(tmp_path: Path) -> None:
    test_file = tmp_path / "test_recording.py"
    test_file.write_text(RECORDING)
    records = tmp_path / "records"
    records.mkdir()
    env = {**os.environ, "RECORDS": str(records)}
    done = run_pytest(test_file, tmp_path, "-n", "2", env=env)
    assert done.returncode == 0 and "4 passed" in done.stdout, done.stdout + done.stderr
    seen = [json.loads(path.read_text()) for path in sorted(records.glob("*.json"))]
    assert len(seen) == 4 and {record["worker"] for record in seen} == {"gw0", "gw1"}
    for key in ("mount", "socket", "daemon", "driver"):
        assert len({record[key] for record in seen}) == 4, (key, seen)
    assert not [m for m in read_mounts() if m.mountpoint.startswith(str(tmp_path))]
    assert not [pid for record in seen for pid in (record["daemon"], record["driver"]) if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_board_heaps_and_driver_timeout_come_from_the_ini_file_or_the_command_line(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_options.py").write_text(OPTIONS)
    (project / "pytest.ini").write_text("[pytest]\nmemtrackfs_board = imx8qm\nmemtrackfs_heaps =\n    system\n"
                                        "    cma=64M\nmemtrackfs_driver_timeout = 2.5\n")
    done = run_pytest(project / "test_options.py", tmp_path, cwd=project)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
    (project / "pytest.ini").write_text("[pytest]\n")
    done = run_pytest(project / "test_options.py", tmp_path, "--memtrackfs-board", "imx8qm", "--memtrackfs-heap",
                      "system", "--memtrackfs-heap", "cma=64M", "--memtrackfs-driver-timeout", "2.5", cwd=project)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


def test_without_a_usable_fuse_the_tests_are_skipped_saying_why(tmp_path: Path) -> None:
    """In a private mount namespace, /dev/fuse is an empty file: FUSE is unusable there."""
    test_file = tmp_path / "test_fails.py"
    test_file.write_text(FAILING)
    fake = tmp_path / "not-fuse"
    fake.write_text("")
    prefix = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
              f'mount --bind {fake} /dev/fuse && exec "$@"', "sh")
    done = run_pytest(test_file, tmp_path, prefix=prefix)
    assert done.returncode == 0 and "1 skipped" in done.stdout, done.stdout + done.stderr
    assert ("memtrackfs: FUSE is not usable on this machine: /dev/fuse is not the FUSE device "
            "(character device 10:229)") in done.stdout


def test_an_rk3588_board_and_scenario_from_the_fixtures(tmp_path: Path) -> None:
    test_file = tmp_path / "test_rk3588.py"
    test_file.write_text(RK3588)
    done = run_pytest(test_file, tmp_path)
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout + done.stderr
