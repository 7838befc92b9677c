"""``memtrackfs run``: the emulation at the real paths in a private mount namespace.

Real namespaces, real FUSE mounts, real processes (sh, ps, dmesg, psutil, vpu-sim). Every test
also relies on the suite's final check that no mount or daemon was left behind; the teardown
tests check it for each run, with the processes of the run's namespace.
"""
from __future__ import annotations

import os
import pty
import pwd
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from helpers import ROOT
from helpers.run import ENV, run_command, start_run

from memtrackfs.client import MemtrackClient
from memtrackfs.mounts import read_mounts, runtime_dir
from memtrackfs.sandbox import proc_union

COVERED = ("/proc", "/sys/kernel/debug", "/sys/kernel/dmabuf", "/dev")


def host_mounts() -> list[str]:
    """The host's mountinfo lines at and under the paths a run covers (ids included)."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f
                if any(line.split()[4] == path or line.split()[4].startswith(path + "/") for path in COVERED)]


def run_dirs() -> set[str]:
    base = runtime_dir()
    return {name for name in os.listdir(base) if name.startswith("run-")} if os.path.isdir(base) else set()


def processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line mentions ``text``: a run's daemons."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(text in part for part in proc.info["cmdline"] or []):
            found.append(proc.info["pid"])
    return found


def dead(pid: int, timeout: float = 5.0) -> bool:
    """Gone, or a zombie: it holds no namespace any more (init reaps it in its own time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def assert_torn_down(workdir: str, mounts_before: list[str]) -> None:
    assert not os.path.exists(workdir), f"{workdir} was not removed"
    assert not [m for m in read_mounts() if m.mountpoint.startswith(workdir)]
    assert processes_mentioning(workdir) == [], "a daemon of the run is still alive"
    assert host_mounts() == mounts_before


# -- the emulation at the real paths ----------------------------------------------------------

def test_the_issue_script_reads_the_emulation_at_the_real_paths() -> None:
    done = run_command("--", "sh", "-c", "cat /proc/rk_dmabuf/size; "
                                         "cat /sys/kernel/debug/v4l2-memtrack/amphion-vpu; ps -e | wc -l")
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert lines[0] == "Total: 0 KiB"
    assert lines[1].startswith("Total memory usage: ")
    assert lines[2].startswith("amphion-vpu (tgid=")
    leaves = [line.split(" (")[0].strip() for line in lines[3:-1]]
    assert leaves == ["fw [leaf]", "rpc [leaf]", "fw [leaf]", "rpc [leaf]"]  # the imx8qxp's two cores
    assert int(lines[-1]) > 2  # ps's header, sh, ps, wc and the host's processes


def test_the_other_files_and_nodes_are_at_their_real_paths_too() -> None:
    done = run_command("--", "sh", "-c", "grep -c 'Dma-buf Objects:' /sys/kernel/debug/dma_buf/bufinfo; "
                                         "ls /sys/kernel/dmabuf; "
                                         "grep -c v4l2-memtrack.c /sys/kernel/debug/dynamic_debug/control; "
                                         "test -f /dev/video0 && test -f /dev/video1 && echo nodes; "
                                         "ls /proc/rk_dma_heap")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1", "buffers", "2", "nodes", "alloc_bitmap"]


def test_proc_self_and_proc_pid_are_the_real_processes() -> None:
    done = run_command("--no-vpu", "--", "sh", "-c",
                       f"echo $$; tr '\\0' ' ' < /proc/{os.getpid()}/cmdline; echo; exec cat /proc/self/status")
    assert done.returncode == 0, done.stderr
    shell_pid, host_cmdline, *status = done.stdout.splitlines()
    assert f"Pid:\t{shell_pid}" in status  # `exec cat`: cat has the shell's pid
    assert "pytest" in host_cmdline  # this test's own process, seen from inside


def test_psutil_works_inside() -> None:
    script = ("import os, psutil\n"
              "me = psutil.Process()\n"
              "assert me.pid == os.getpid() and me.pid in psutil.pids(), 'own process'\n"
              "assert me.parent().pid == os.getppid(), 'parent'\n"
              "assert me.memory_info().rss > 0 and psutil.virtual_memory().total > 0\n"
              "print(len(psutil.pids()), me.cmdline()[-1])\n")
    done = run_command("--no-vpu", "--", "python", "-c", script, "marker")
    assert (done.returncode, done.stderr) == (0, "")
    count, last_argument = done.stdout.split()
    assert int(count) > 1 and last_argument == "marker"


def test_vpu_sim_plays_inside_without_options() -> None:
    done = run_command("--", "vpu-sim", "play", "--seconds", "1")
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1]  # "play 1920x1080 h264: N frames, F fps, memory usage B bytes"
    assert last.startswith("play 1920x1080 h264:")
    assert int(last.split("memory usage ")[1].split()[0]) > 0  # the driver's tracker counted its buffers


def test_dmesg_reads_the_emulated_kmsg() -> None:
    done = run_command("--board", "imx8qm", "--", "dmesg")
    assert done.returncode == 0, done.stderr
    assert "amphion-vpu: imx8qm probed, decoder dev/video0, encoder dev/video1" in done.stdout
    assert "memtrackfs: dev/video0 registered by vpu_sim" in done.stdout


def test_a_scenario_plays_beside_the_command_and_leakwatch_catches_its_leak() -> None:
    mounts_before = host_mounts()
    done = run_command("--scenario", str(ROOT / "examples/scenarios/keep-dmabufs.toml"), "--",
                       "sh", str(ROOT / "scripts/leakwatch.sh"), "-d", "6")
    assert done.returncode == 1, done.stdout + done.stderr  # leakwatch: a leak
    assert "LEAK: rk_dmabuf/size grew" in done.stdout + done.stderr
    assert "scenario keep-dmabufs: done" in done.stderr  # the scenario's summary, after the command
    assert host_mounts() == mounts_before


def test_a_command_that_ends_before_its_scenario_is_reported() -> None:
    done = run_command("--scenario", "clean", "--", "true")  # a built-in scenario, by name
    assert done.returncode == 125, done.stderr  # `true` succeeded, but the scenario did not play out
    interrupted = r"^scenario clean: INTERRUPTED at \d+\.\d s of about 4\.3 s \(SIGINT\)"
    assert re.search(interrupted, done.stderr, re.M), done.stderr
    assert done.stderr.rstrip().endswith("memtrackfs: run: COMMAND ended while the scenario was still playing: the "
                                         "scenario was stopped and its summary above covers only what had run; keep "
                                         "COMMAND running at least as long as the scenario (e.g. leakwatch.sh -d "
                                         "SECONDS, sleep SECONDS)")
    failed = run_command("--scenario", "clean", "--", "sh", "-c", "exit 3")
    assert failed.returncode == 3 and "INTERRUPTED" in failed.stderr  # the command's failure comes first


def test_a_driver_that_does_not_start_is_reported_with_its_log() -> None:
    done = run_command("--scenario", "no-such-scenario", "--", "true")
    assert done.returncode == 125
    assert done.stderr.startswith("memtrackfs: run: vpu-sim scenario exited with status 2 before it was ready "
                                  "(its log: "), done.stderr
    assert "vpu-sim: scenario: no-such-scenario: no such file, nor a built-in scenario" in done.stderr


def test_no_vpu_starts_no_driver() -> None:
    done = run_command("--no-vpu", "--", "sh", "-c", "ls /sys/kernel/debug/v4l2-memtrack; "
                                                     "test -e /dev/video0 || echo no-video0")
    assert (done.returncode, done.stdout) == (0, "no-video0\n")


# -- exit status and errors -------------------------------------------------------------------

@pytest.mark.parametrize("script, status", [("true", 0), ("exit 7", 7), ("kill -KILL $$", 128 + 9),
                                            ("kill -TERM $$", 128 + 15)])
def test_the_exit_status_is_the_commands(script: str, status: int) -> None:
    assert run_command("--no-vpu", "--", "sh", "-c", script).returncode == status


@pytest.mark.parametrize("command, status, message", [
    ("no-such-command-here", 127, "memtrackfs: run: no-such-command-here: No such file or directory"),
    ("/etc/passwd", 126, "memtrackfs: run: /etc/passwd: Permission denied"),
])
def test_a_command_that_cannot_run(command: str, status: int, message: str) -> None:
    before = run_dirs()
    done = run_command("--no-vpu", "--", command)
    assert (done.returncode, done.stderr.strip()) == (status, message)
    assert run_dirs() == before


def test_a_failed_setup_is_status_125_and_leaves_nothing() -> None:
    before = run_dirs()
    done = subprocess.run([sys.executable, "-m", "memtrackfs", "run", "--", "true"], capture_output=True,
                          text=True, cwd=ROOT, env={**ENV, "MEMTRACKFS_FUSE": "no-such-binding"})
    assert done.returncode == 125
    assert done.stderr.startswith("memtrackfs: run: cannot mount memtrackfs: ")
    assert "MEMTRACKFS_FUSE='no-such-binding'" in done.stderr
    assert run_dirs() == before


def test_no_command_is_a_usage_error() -> None:
    done = run_command("--no-vpu")
    assert done.returncode == 2 and "no COMMAND given" in done.stderr


# -- isolation and teardown -------------------------------------------------------------------

def test_background_processes_and_daemons_end_with_the_command() -> None:
    mounts_before = host_mounts()
    done = run_command("--", "sh", "-c", "sleep 300 & echo $!; echo $MEMTRACKFS_SOCKET")
    assert done.returncode == 0, done.stderr
    sleeper, socket = done.stdout.split()
    assert dead(int(sleeper)), "the command's background process outlived the run"
    assert_torn_down(os.path.dirname(socket), mounts_before)


def test_sigterm_tears_down_and_the_host_never_sees_the_mounts() -> None:
    mounts_before = host_mounts()
    run = start_run("--", "sh", "-c", "echo $MEMTRACKFS_SOCKET; exec sleep 300", stdout=subprocess.PIPE, text=True)
    try:
        workdir = os.path.dirname(run.stdout.readline().strip())
        assert host_mounts() == mounts_before  # the binds exist only in the run's namespace
        assert len(processes_mentioning(workdir)) == 3  # the memtrackfs, proc union and vpu_sim daemons
        run.send_signal(signal.SIGTERM)
        assert run.wait(30) == 128 + signal.SIGTERM  # passed on to the command, which it killed
    finally:
        stop(run)
        run.stdout.close()
    assert_torn_down(workdir, mounts_before)


def test_ctrl_c_on_a_terminal_reaches_the_command_once_and_the_run_waits_for_it() -> None:
    # The terminal signals the whole foreground process group; the run must not pass it on again.
    script = ("import signal, sys, time\n"
              "got = []\n"
              "signal.signal(signal.SIGINT, lambda *_: got.append(1))\n"
              "print('ready', flush=True)\n"
              "while not got: time.sleep(0.01)\n"
              "time.sleep(1)\n"
              "print('interrupts', len(got), 'done', flush=True)\n"
              "sys.exit(3)\n")
    before = run_dirs()
    master, slave = pty.openpty()
    # setsid -c: a new session whose controlling terminal is the pty, the run in its foreground.
    run = subprocess.Popen(["setsid", "-c", sys.executable, "-m", "memtrackfs", "run", "--no-vpu", "--",
                            "python", "-c", script], stdin=slave, stdout=slave, stderr=slave, env=ENV, cwd=ROOT)
    os.close(slave)
    try:
        assert "ready" in read_terminal(master, until="ready")
        os.write(master, b"\x03")  # Ctrl-C
        assert "interrupts 1 done" in read_terminal(master, until="done")
        assert run.wait(30) == 3
    finally:
        stop(run)
        os.close(master)
    assert run_dirs() == before


def stop(run: subprocess.Popen) -> None:
    """After a failed check: end the run through its own teardown (SIGKILL would leave its mount)."""
    if run.poll() is None:
        run.terminate()
        run.wait(60)


def read_terminal(master: int, until: str, timeout: float = 30) -> str:
    text = ""
    deadline = time.monotonic() + timeout
    while until not in text and time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            try:
                text += os.read(master, 4096).decode(errors="replace")
            except OSError:  # EIO: every process on the terminal has closed it
                break
    return text


def mount(path: Path, *options: str) -> None:
    subprocess.run([sys.executable, "-m", "memtrackfs", "mount", str(path / "mnt"), "--socket",
                    str(path / "driver.sock"), *options], check=True, capture_output=True, cwd=ROOT)


def umount(path: Path) -> None:
    subprocess.run([sys.executable, "-m", "memtrackfs", "umount", str(path / "mnt")], check=True,
                   capture_output=True, cwd=ROOT)


# -- rootless ---------------------------------------------------------------------------------

def test_an_unprivileged_user_gets_the_real_paths_through_a_user_namespace() -> None:
    """The namespace half of a rootless run, as `nobody`. The mounts are root's (with allow_other):
    a user's own FUSE mount needs /dev/fuse to be open to users, which it need not be here."""
    workdir = Path(tempfile.mkdtemp(prefix="memtrackfs-rootless-"))
    workdir.chmod(0o755)  # nobody must reach the mount points
    (workdir / "proc").mkdir()
    mount(workdir, "--allow-other")
    union = proc_union.start(str(workdir / "proc"), str(workdir / "mnt/proc"), str(workdir / "proc.log"),
                             allow_other=True)
    # Last, a node registered while the command runs: the run joins the user namespace to bind it.
    inside = ("id -u; cat /proc/rk_dmabuf/size; sh -c 'echo $$; exec readlink /proc/self'; "
              "script -qc tty /dev/null; grep ^Uid: /proc/self/status; echo waiting; "
              "for i in $(seq 400); do test -e /dev/video9 && break; sleep 0.05; done; ls /dev/video9")
    script = ("import sys\n"
              "from memtrackfs.sandbox.command import run_in_namespace\n"
              f"sys.exit(run_in_namespace(['sh', '-c', {inside!r}], {{'PATH': '/usr/bin:/bin'}}, "
              f"'{workdir}/mnt', '{workdir}/proc'))\n")
    run = None
    try:
        run = subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT, stdin=subprocess.DEVNULL)
        lines = []
        while (line := run.stdout.readline()) not in ("waiting\n", ""):
            lines.append(line.rstrip("\n"))
        with MemtrackClient(str(workdir / "driver.sock")) as driver:
            driver.call("register_device", name="video9")
            out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        uid, size, shell, self_link, pty_name, uids = lines
        nobody = pwd.getpwnam("nobody").pw_uid
        assert uid == str(nobody)  # the same user inside as outside: no root in the namespace
        assert size == "Total: 0 KiB"
        assert self_link == shell  # procfs's own link, mounted in the union
        # ptmx through /dev/.host (no mknod in a user namespace): the new terminal is named there
        assert re.fullmatch(r"/dev/\.host/pts/\d+", pty_name), pty_name
        assert uids == f"Uid:\t{nobody}\t{nobody}\t{nobody}\t{nobody}"
        assert out == "/dev/video9\n"
    finally:
        if run is not None and run.poll() is None:
            run.kill()
            run.communicate()
        proc_union.stop(union, str(workdir / "proc"))
        umount(workdir)
        for name in ("driver.log", "proc.log"):
            (workdir / name).unlink()
        (workdir / "proc").rmdir()
        (workdir / "mnt").rmdir()
        workdir.rmdir()
