"""Inside ``memtrackfs run``, ordinary tools nobody here wrote behave as on a board (issue 10).

Each test runs the real tool in a real run and asserts on what it prints: pseudo-terminals
(script, Python's pty, tmux), htop, find, readlink, sysctl, stat -f, ps, pgrep, lsof, busybox,
dmesg (-w, -W, -T, -x), tail -f and cat on /dev/kmsg, a write to /dev/kmsg, device nodes that
come and go, and mounts unmounted outside while a run is alive. What a tool cannot be given
(syslog(2): dmesg -c/-S, busybox dmesg) is in the README; no test or script of ours calls it.
"""
from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT
from helpers.run import run_command, start_run

from memtrackfs.client import MemtrackClient
from memtrackfs.mounts import MountEntry, parse_mountinfo, read_mounts
from memtrackfs.testing.helpers import wait_for

NO_VPU = "--no-vpu"


def inside(script: str, *options: str, timeout: float = 120) -> list[str]:
    """The lines ``sh -c SCRIPT`` prints inside a run; the run must succeed."""
    done = run_command(*options, "--", "bash", "-c", script, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


# A loop that waits, inside the run, until a command succeeds (at most 20 s): for an event.
WAIT = "for i in $(seq 400); do {} && break; sleep 0.05; done"


# -- terminals -----------------------------------------------------------------------------------

# With the VPU, /dev gets nodes the host has not (video0, ...): ptmx must still find pts.
@pytest.mark.parametrize("options", [(NO_VPU,), ()], ids=["no-vpu", "vpu"])
def test_pseudo_terminals_work_for_script_python_and_tmux(options: tuple[str, ...]) -> None:
    lines = inside("script -qc tty /dev/null; "
                   "python3 -c 'import os, pty; m, s = pty.openpty(); print(os.ttyname(s))'; "
                   "tmux -L memtrackfs-test-$$ new-session -d -x 80 -y 10 'echo in-tmux; sleep 60'; "
                   + WAIT.format("tmux -L memtrackfs-test-$$ capture-pane -p | grep -q in-tmux") + "; "
                   "tmux -L memtrackfs-test-$$ capture-pane -p | grep in-tmux; tmux -L memtrackfs-test-$$ kill-server",
                   *options)
    assert [re.fullmatch(r"/dev/pts/\d+", line) is not None for line in lines[:2]] == [True, True], lines
    assert lines[2:] == ["in-tmux"]


def test_the_terminal_of_the_run_stays_a_terminal() -> None:
    """/dev/pts is the host's devpts, not a new instance: the caller's terminal is still one."""
    master, slave = os.openpty()
    name = os.ttyname(slave)
    run = start_run(NO_VPU, "--", "sh", "-c", "tty; test -c \"$(tty)\" && echo is-a-device",
                    stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(slave)
    try:
        out, err = run.communicate(timeout=120)
    finally:
        os.close(master)
    assert (run.returncode, out.split()) == (0, [name, "is-a-device"]), err


# -- /proc ---------------------------------------------------------------------------------------

def test_htop_lists_the_processes() -> None:
    lines = inside("sleep 4242 & TERM=xterm tmux -L memtrackfs-htop-$$ new-session -d -x 200 -y 30 "
                   "'htop --filter=\"sleep 4242\"'; "
                   + WAIT.format("tmux -L memtrackfs-htop-$$ capture-pane -p | grep -q 'sleep 4242'") + "; "
                   "tmux -L memtrackfs-htop-$$ capture-pane -p; tmux -L memtrackfs-htop-$$ kill-server", NO_VPU)
    screen = "\n".join(lines)
    assert re.search(r"Tasks: ([2-9]|\d\d+)", screen), screen  # it counted the processes
    assert re.search(r"^\s*\d+ root .* sleep 4242\s*$", screen, re.M), screen  # and found this one


def test_find_sees_a_directory_per_process() -> None:
    lines = inside("find /proc -maxdepth 1 -type d -name '[0-9]*' | wc -l; ls /proc | grep -c '^[0-9]'; "
                   "find /proc -maxdepth 1 -type d -name $$; echo $$", NO_VPU)
    found, listed, own, pid = lines
    assert int(found) > 10 and abs(int(found) - int(listed)) <= 3  # processes come and go meanwhile
    assert own == f"/proc/{pid}"


def test_self_and_thread_self_are_the_caller() -> None:
    thread = ("import os, threading\n"
              "def show(): print(os.getpid(), threading.get_native_id(), os.readlink('/proc/thread-self'),"
              " os.path.isdir(f'/proc/self/task/{threading.get_native_id()}'))\n"
              "worker = threading.Thread(target=show); worker.start(); worker.join()\n")
    lines = inside("sh -c 'echo $$; exec readlink /proc/self'; sh -c 'echo $$; exec readlink /proc/thread-self'; "
                   f"python3 -c \"{thread}\"", NO_VPU)
    assert lines[1] == lines[0] and re.fullmatch(r"\d+", lines[0])
    assert lines[3] == f"{lines[2]}/task/{lines[2]}"
    pid, tid, thread_self, has_task = lines[4].split()
    assert tid != pid and (thread_self, has_task) == (f"{pid}/task/{tid}", "True")


def test_magic_links_keep_working() -> None:
    lines = inside("exec 9</etc/hostname; readlink /proc/self/fd/9; readlink /proc/$$/fd/9; cat /proc/$$/fd/9; "
                   "cat <(echo from-a-pipe); readlink /proc/self/exe; readlink /proc/$$/cwd", NO_VPU)
    assert lines[:2] == ["/etc/hostname", "/etc/hostname"]
    assert lines[2] == Path("/etc/hostname").read_text().strip()
    assert lines[3:5] == ["from-a-pipe", "/usr/bin/readlink"]
    assert lines[5] == str(ROOT)  # the run keeps the caller's working directory


def test_sysctl_reads_proc_sys() -> None:
    lines = inside("sysctl kernel.pid_max; sysctl -a 2>/dev/null | wc -l; realpath /proc/sys", NO_VPU)
    assert lines[0] == f"kernel.pid_max = {Path('/proc/sys/kernel/pid_max').read_text().strip()}"
    assert int(lines[1]) > 500
    assert lines[2] == "/proc/sys"


def test_stat_f_says_proc_where_procfs_answers() -> None:
    # A board whose kernel adds nothing to /proc gets procfs itself at /proc.
    assert inside("stat -f -c %T /proc /proc/sys", "--board", "imx8qxp", NO_VPU) == ["proc", "proc"]
    # With the board's entries, /proc itself is the union (FUSE: README); what is procfs's says proc.
    lines = inside("stat -f -c %T /proc /proc/sys /proc/meminfo /proc/self/ /proc/rk_dmabuf", NO_VPU)
    assert lines == ["fuseblk", "proc", "proc", "fuseblk", "fuseblk"]


def test_ps_pgrep_and_lsof_see_the_processes_and_their_files() -> None:
    lines = inside("sleep 4343 & exec 9</etc/hostname; ps -e -o pid=,comm= | grep -c .; ps -o comm= -p $$; "
                   "pgrep -x -f 'sleep 4343' | wc -l; lsof -p $$ -a -d 9 -F n | grep ^n; kill %1", NO_VPU)
    assert int(lines[0]) > 10
    assert lines[1:] == ["bash", "1", "n/etc/hostname"]


def test_psutil_sees_the_same_processes_as_the_host() -> None:
    script = ("import os, sys, psutil\n"
              "me = psutil.Process()\n"
              "print(me.exe() == os.path.realpath(sys.executable), me.cwd(), len(me.threads()), me.parent().name())\n")
    lines = inside(f"python3 -c '{script}'; true", NO_VPU)  # `; true`: bash must not exec python
    assert lines[0].split() == ["True", str(ROOT), "1", "bash"]


# -- files read with sendfile/splice ---------------------------------------------------------------

def test_busybox_cat_cp_and_copyfile_get_the_whole_files() -> None:
    files = ["/proc/rk_dmabuf/size", "/proc/rk_dmabuf/peak", "/sys/kernel/debug/dma_buf/bufinfo",
             "/sys/kernel/debug/dynamic_debug/control", "/proc/rk_dma_heap/alloc_bitmap"]
    copy = "import shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2])"
    script = "; ".join(f"cat {path} | md5sum; busybox cat {path} | md5sum; busybox cp {path} $T; md5sum < $T; "
                       f"python3 -c '{copy}' {path} $T; md5sum < $T; stat -c %s {path}; wc -c < {path}"
                       for path in files)
    lines = inside(f"T=$(mktemp); {script}; rm $T", NO_VPU)
    for i, path in enumerate(files):
        sums, (size, length) = lines[6 * i:6 * i + 4], lines[6 * i + 4:6 * i + 6]
        assert len(set(sums)) == 1, (path, sums)
        assert sums[0] != "d41d8cd98f00b204e9800998ecf8427e  -", path  # not empty
        assert size == length, path  # stat reports the length the next open reads


# -- /dev/kmsg -----------------------------------------------------------------------------------

def test_dmesg_w_cat_and_tail_f_follow_dev_kmsg() -> None:
    lines = inside("dmesg -w > /tmp/.dmesg-w.$$ & W=$!; cat /dev/kmsg > /tmp/.cat.$$ & C=$!; "
                   "timeout 2 tail -f /dev/kmsg > /tmp/.tail.$$; echo tail=$?; "
                   "echo '<6>followed-marker' > /dev/kmsg; "
                   + WAIT.format("grep -q followed-marker /tmp/.dmesg-w.$$ && "
                                 "grep -q followed-marker /tmp/.cat.$$") + "; "
                   "kill $W $C; grep -h followed-marker /tmp/.dmesg-w.$$ /tmp/.cat.$$; wc -c < /tmp/.tail.$$; "
                   "rm /tmp/.dmesg-w.$$ /tmp/.cat.$$ /tmp/.tail.$$", NO_VPU)
    assert lines[0] == "tail=124"  # tail -f waits, silent, as on the device (it reads it like a pipe)
    assert re.fullmatch(r"\[ *\d+\.\d{6}\] followed-marker", lines[1]), lines
    assert re.fullmatch(r"14,\d+,\d+,-;followed-marker", lines[2]), lines
    assert lines[3] == "0"


def test_dmesg_W_prints_only_new_records() -> None:
    lines = inside("echo '<6>old-record' > /dev/kmsg; dmesg -W > /tmp/.dmesg-W.$$ & W=$!; "
                   + WAIT.format("grep -q request_wait_answer /proc/$W/wchan") + "; "
                   "echo '<6>new-record' > /dev/kmsg; " + WAIT.format("grep -q new-record /tmp/.dmesg-W.$$") + "; "
                   "kill $W; cat /tmp/.dmesg-W.$$; rm /tmp/.dmesg-W.$$", NO_VPU)
    assert len(lines) == 1 and lines[0].endswith("] new-record"), lines


def test_dmesg_T_shows_the_wall_clock() -> None:
    lines = inside("echo '<6>clock-marker' > /dev/kmsg; date +%s; dmesg -T | grep clock-marker", NO_VPU)
    now = int(lines[0])
    stamp = re.fullmatch(r"\[(.*)\] clock-marker", lines[1]).group(1)
    shown = datetime.datetime.strptime(stamp, "%a %b %d %H:%M:%S %Y").timestamp()
    assert abs(shown - now) < 5, (stamp, now)  # not early by the host's uptime


def test_a_write_to_dev_kmsg_is_a_record_of_the_user_facility() -> None:
    lines = inside("echo '<4>marker' > /dev/kmsg; echo plain > /dev/kmsg; dmesg -x | tail -2", NO_VPU)
    assert [re.sub(r"\[ *\d+\.\d+\]", "[T]", line) for line in lines] == [
        "user  :warn  : [T] marker", "user  :warn  : [T] plain"]


def test_dmesg_without_w_ends_at_the_newest_record() -> None:
    lines = inside("dmesg | grep -c 'dev/video1 registered by vpu_sim'; echo dmesg=${PIPESTATUS[0]}")
    assert lines == ["1", "dmesg=0"]  # it read the log to its end (O_NONBLOCK: EAGAIN) and returned


def test_no_test_or_script_of_ours_reads_the_hosts_ring() -> None:
    """dmesg -c/-S/--clear/--syslog and busybox dmesg go through syslog(2), the host's ring
    (README): a test calling them would clear the machine's kernel log."""
    forbidden = re.compile(r"dmesg[^\n|;]*\s(-[a-zA-Z]*[cCS]\b|--clear|--read-clear|--syslog)|busybox\s+dmesg")
    for path in [*ROOT.glob("tests/**/*.py"), *ROOT.glob("scripts/**/*"), *ROOT.glob("examples/**/*"),
                 *ROOT.glob("memtrackfs/**/*.py"), *ROOT.glob("vpu_sim/**/*")]:
        if path.is_file() and path != Path(__file__):
            text = path.read_text(errors="replace")
            assert not forbidden.search(text), f"{path} calls {forbidden.search(text).group()}"


# -- /dev ----------------------------------------------------------------------------------------

def test_a_node_registered_while_the_command_runs_appears_and_goes(tmp_path: Path) -> None:
    run = start_run(NO_VPU, "--", "bash", "-c",
                    "echo $MEMTRACKFS_SOCKET; " + WAIT.format("test -e /dev/video9") + "; ls -l /dev/video9; "
                    "read; " + WAIT.format("! test -e /dev/video9") + "; test -e /dev/video9 || echo gone",
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        socket = run.stdout.readline().strip()
        with MemtrackClient(socket) as driver:
            driver.call("register_device", name="video9")
            listing = run.stdout.readline()
            assert re.match(r"-rw-rw-rw- 1 \S+ \S+ \d+ .* /dev/video9$", listing), listing
        run.stdin.write("\n")  # the driver is gone, and its node with it
        run.stdin.close()
        assert run.stdout.read() == "gone\n"
        assert run.wait(60) == 0
    finally:
        if run.poll() is None:
            run.terminate()
            run.wait(60)
        run.stdout.close()


def test_a_driver_started_inside_the_run_is_found_by_v4l2_ctl() -> None:
    lines = inside("vpu-sim daemon --mount $(dirname $MEMTRACKFS_SOCKET)/mnt > /dev/null & "
                   + WAIT.format("test -e /dev/video0 -a -e /dev/video1 -a -e /dev/media0") + "; v4l2-ctl --list-devices; "
                   "v4l2-ctl -d /dev/video0 --info | grep 'Driver name'; kill %1; wait", NO_VPU)
    assert lines[:4] == ["amphion vpu decoder (platform: amphion-vpu):", "\t/dev/video0", "\t/dev/video1",
                         "\t/dev/media0"], lines
    assert lines[-1].split() == ["Driver", "name", ":", "amphion-vpu"]


def test_nothing_of_the_run_reaches_the_hosts_dev() -> None:
    before = sorted(os.listdir("/dev"))
    lines = inside("touch /dev/made-in-the-run && ls /dev/made-in-the-run; ls /dev/video0 /dev/kmsg")
    assert lines == ["/dev/made-in-the-run", "/dev/kmsg", "/dev/video0"]
    assert sorted(os.listdir("/dev")) == before


# -- mounts outside ------------------------------------------------------------------------------

def test_mountinfo_paths_are_unescaped_as_the_kernel_escapes_them() -> None:
    """show_mountinfo() writes space, tab, newline and backslash in paths and the source as octal escapes."""
    text = ("36 35 0:48 /sub\\134dir /mnt/a\\040b rw,relatime shared:1 - fuse.memtrackfs memtrackfs:/run/x\\040y.sock rw\n"
            "37 36 0:49 / /mnt/a\\040b/dev rw - tmpfs tmpfs rw\n")
    assert parse_mountinfo(text) == [
        MountEntry("/mnt/a b", "fuse.memtrackfs", "memtrackfs:/run/x y.sock", "0:48", "/sub\\dir"),
        MountEntry("/mnt/a b/dev", "tmpfs", "tmpfs", "0:49", "/"),
    ]


def test_mounts_unmounted_outside_while_a_run_is_alive_go_at_once(tmp_path: Path) -> None:
    other = tmp_path / "other"
    scratch = tmp_path / "tmpfs"
    scratch.mkdir()
    subprocess.run([sys.executable, "-m", "memtrackfs", "mount", str(other), "--socket", str(tmp_path / "o.sock")],
                   check=True, capture_output=True, cwd=ROOT)
    subprocess.run(["mount", "-t", "tmpfs", "memtrackfs-test", str(scratch)], check=True)
    run = start_run(NO_VPU, "--", "sh", "-c", "echo $$; exec sleep 300", stdout=subprocess.PIPE, text=True)
    try:
        pid = int(run.stdout.readline())
        copies = lambda: [line for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                          if f" {other} " in line or f" {scratch} " in line]
        assert len(copies()) == 2  # the namespace started with copies of both
        umount = subprocess.run([sys.executable, "-m", "memtrackfs", "umount", str(other)], capture_output=True,
                                text=True, cwd=ROOT, timeout=60)
        # It returns once the daemon has exited, which it does once no namespace holds the mount.
        assert (umount.returncode, umount.stdout.strip()) == (0, f"memtrackfs: unmounted {other}"), umount.stderr
        assert subprocess.run(["umount", str(scratch)], capture_output=True).returncode == 0
        wait_for(lambda: copies() == [], what="the run's copies of the unmounted mounts to go")
    finally:
        run.terminate()
        run.wait(60)
        run.stdout.close()
        for path in (other, scratch):
            if any(m.mountpoint == str(path) for m in read_mounts()):
                subprocess.run(["umount", "-l", str(path)])
