"""The proc union (``memtrackfs.sandbox.proc_union``) on its own, mounted outside any run: what
each name is, and what the reaper takes back from the kernel's caches."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from helpers import ROOT
from helpers.run import run_command

from memtrackfs.sandbox import proc_union
from memtrackfs.testing.helpers import wait_for

FUSEPY = ROOT / ".venv" / "fusepy-3.0.1"


@pytest.fixture
def union(tmp_path: Path) -> Iterator[Path]:
    """The union at tmp_path/proc, with two of the board's entries (a directory and a file)."""
    own = tmp_path / "own"
    (own / "rk_dmabuf").mkdir(parents=True)
    (own / "board_file").write_text("x\n")
    mountpoint = tmp_path / "proc"
    mountpoint.mkdir()
    daemon = proc_union.start(str(mountpoint), str(own), str(tmp_path / "proc.log"))
    try:
        yield mountpoint
    finally:
        proc_union.stop(daemon, str(mountpoint))


def test_the_listing_is_procfs_and_the_boards_entries(union: Path) -> None:
    names = set(os.listdir(union))
    real = {name for name in os.listdir("/proc") if not name.isdigit()}
    assert real | {"rk_dmabuf", "board_file"} <= names
    assert str(os.getpid()) in names and ".real" not in names
    kinds = {entry.name: entry for entry in os.scandir(union)}
    assert kinds[str(os.getpid())].is_dir(follow_symlinks=False)  # htop keeps only directories
    assert kinds["rk_dmabuf"].is_dir(follow_symlinks=False) and kinds["board_file"].is_file(follow_symlinks=False)
    assert kinds["mounts"].is_symlink() and os.readlink(union / "mounts") == "self/mounts"  # procfs's own link
    assert kinds["sys"].is_dir(follow_symlinks=False) and kinds["meminfo"].is_file(follow_symlinks=False)


def test_a_process_directory_leads_into_procfs(union: Path) -> None:
    me = union / str(os.getpid())
    assert stat.S_IMODE(os.lstat(me).st_mode) == 0o555 and os.lstat(me).st_uid == os.getuid()
    assert sorted(os.listdir(me)) == sorted(os.listdir(f"/proc/{os.getpid()}"))
    assert os.readlink(me / "stat") == f"/proc/.real/{os.getpid()}/stat"  # the namespace mounts procfs there
    assert os.readlink(me / "exe") == os.readlink("/proc/self/exe")  # a copy: what the program is
    assert os.readlink(me / "cwd") == os.getcwd()
    assert (me / "task").is_dir() and not (me / "task").is_symlink()
    tid = os.listdir(me / "task")[0]
    assert os.readlink(me / "task" / tid / "comm") == f"/proc/.real/{os.getpid()}/task/{tid}/comm"
    for missing in ("no-such-entry", f"{os.getpid()}/ctty", f"{os.getpid()}/task/999999999", "999999999"):
        assert not os.path.lexists(union / missing), missing


def test_an_exited_process_is_gone_at_once_though_the_kernel_kept_its_entry(union: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    entry = union / str(sleeper.pid)
    assert entry.is_dir()  # now the kernel keeps the entry for ENTRY_TIMEOUT
    sleeper.kill()
    sleeper.wait()
    wait_for(lambda: not os.path.lexists(entry), timeout=5, what="the reaper to drop the exited process")


def test_a_changed_exe_is_read_again(union: Path) -> None:
    child = subprocess.Popen(["sh", "-c", "read line; exec sleep 300"], stdin=subprocess.PIPE)
    try:
        exe = union / str(child.pid) / "exe"
        assert os.readlink(exe) == os.readlink(f"/proc/{child.pid}/exe")  # the shell: now kept by the kernel
        child.stdin.write(b"\n")
        child.stdin.flush()
        wait_for(lambda: os.readlink(f"/proc/{child.pid}/exe").endswith("/sleep"), what="the exec")
        wait_for(lambda: os.readlink(exe).endswith("/sleep"), timeout=5, what="the reaper to drop the old text")
    finally:
        child.kill()
        child.wait()


def test_run_works_on_fusepy_301_and_libfuse2_too() -> None:
    """The union keeps to fusepy's API: on libfuse2 nothing is cached, so it is slower (bench.py)."""
    assert (FUSEPY / "fuse.py").exists(), "scripts/test.sh installs fusepy 3.0.1 here"
    env = {**os.environ, "MEMTRACKFS_FUSE": "fusepy",
           "PYTHONPATH": os.pathsep.join([str(FUSEPY), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = run_command("--no-vpu", "--", "bash", "-c",
                       "sh -c 'echo $$; exec readlink /proc/self'; find /proc -maxdepth 1 -type d -name $$; "
                       "ps -o comm= -p $$; cat /proc/rk_dmabuf/size; grep ' /proc ' /proc/self/mountinfo | grep -o 'fuse.memtrackfs-proc'",
                       env=env)
    assert done.returncode == 0, done.stderr
    shell, self_link, found, comm, size, union_type = done.stdout.splitlines()
    assert self_link == shell and found.startswith("/proc/") and comm == "bash"
    assert (size, union_type) == ("Total: 0 KiB", "fuse.memtrackfs-proc")
