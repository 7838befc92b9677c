"""The mounted files behave like procfs/debugfs: sizes, modes, snapshots, write errors, kmsg."""
from __future__ import annotations

import errno
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from memtrackfs.testing.helpers import Mount, wait_for

MEMTRACK = "sys/kernel/debug/v4l2-memtrack"
CONTROL = "sys/kernel/debug/dynamic_debug/control"
LINE = re.compile(r"^( *)(?:(\S+) )?(\[leaf\] )?(?:\(tgid=(\d+), pid=(\d+)\) )?usage: (\d+)"
                  r"(?: \(count=(\d+)(?:, self=(\d+))?\))?$")


def check_consistent(text: str) -> int:
    """Parse a v4l2-memtrack file; assert every node's usage = self + children. Return node count."""
    lines = text.splitlines()
    total = int(re.fullmatch(r"Total memory usage: (\d+) bytes", lines[0]).group(1))
    nodes = []  # (depth, usage, self or None)
    for line in lines[1:]:
        m = LINE.match(line)
        assert m, f"malformed line {line!r}"
        nodes.append((len(m.group(1)) // 2, int(m.group(6)), None if m.group(8) is None else int(m.group(8))))
    assert nodes[0][1] == total
    for i, (depth, usage, own) in enumerate(nodes):
        children = []
        for d, u, _ in nodes[i + 1:]:
            if d <= depth:
                break
            if d == depth + 1:
                children.append(u)
        if children and own is not None:
            assert usage == own + sum(children), f"node {i}: usage != self + children"
        elif children:  # count 0 hides self (it may still hold bytes after an unmatched sub)
            assert usage >= sum(children), f"node {i}: usage < children"
    return len(nodes)


def test_layout_modes_and_sizes(mount: Mount) -> None:
    with mount.client() as c:
        c.call("root", name="amphion-vpu")
    expected = {
        "dev": 0o755, "dev/kmsg": 0o644, "proc": 0o555, "sys/kernel/debug": 0o700,
        f"{MEMTRACK}/amphion-vpu": 0o444, CONTROL: 0o644,
    }
    for path, mode in expected.items():
        st = os.stat(mount / path)
        assert stat.S_IMODE(st.st_mode) == mode, path
        if path == "dev/kmsg":
            assert st.st_size == 1 << 62, path  # SEEK_END lands past every record (dmesg -W)
        elif stat.S_ISREG(st.st_mode):
            assert st.st_size == len(mount.read(path)), path  # what sendfile(2) readers stop at
    assert os.listdir(mount / MEMTRACK) == ["amphion-vpu"]


def test_cat_reads_the_whole_file_and_files_follow_roots(mount: Mount) -> None:
    with mount.client() as c:
        root = c.call("root", name="vpu")["node"]
        for i in range(2000):  # far more than one FUSE read
            c.submit("add", node=root, bytes=4096, name=f"buffer-{i}")
        c.call("read", node=root)
        text = subprocess.run(["cat", str(mount / f"{MEMTRACK}/vpu")], capture_output=True, check=True).stdout
        assert text.startswith(b"Total memory usage: 8192000 bytes\n")
        assert text.count(b"[leaf]") == 2000 and text.endswith(b"buffer-1999 [leaf] " + f"(tgid={os.getpid()}, pid={os.getpid()}) usage: 4096\n".encode())
        c.call("destroy", node=root)
    assert os.listdir(mount / MEMTRACK) == []
    with pytest.raises(FileNotFoundError):
        mount.read(f"{MEMTRACK}/vpu")


def test_one_byte_reads_see_one_consistent_snapshot_while_a_writer_changes_the_tree(mount: Mount, tmp_path: Path) -> None:
    stop = threading.Event()
    with mount.client() as c:
        root = c.call("root", name="busy")["node"]
        instances = [c.call("node", parent=root, name="instance")["node"] for _ in range(8)]
        for node in instances:
            for q in ("output", "capture"):
                c.call("add", node=c.call("node", parent=node, name=q)["node"], bytes=2076672)
            for _ in range(40):
                c.submit("add", node=node, bytes=917504, name="mbi")
        c.call("read", node=root)

        def writer() -> None:
            i = 0
            while not stop.is_set():
                node = instances[i % len(instances)]
                c.call("add", node=node, bytes=4096 + i, name="dcp")
                c.call("add", node=node, bytes=8192)
                c.call("sub", node=node, bytes=4096 + i - 1, name="dcp")  # some match, some underflow
                i += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            snapshots = []
            for chunk in (1, 4096):
                fd = os.open(mount / f"{MEMTRACK}/busy", os.O_RDONLY)
                try:
                    parts = []
                    while data := os.read(fd, chunk):
                        parts.append(data)
                finally:
                    os.close(fd)
                snapshots.append(b"".join(parts).decode())
            # sendfile(2)/splice(2) readers stop at the size the lookup reported: it must be the
            # length of the very rendering their open serves, though the tree changes meanwhile.
            path, copy = str(mount / f"{MEMTRACK}/busy"), str(tmp_path / "copy")
            for _ in range(5):
                snapshots.append(subprocess.run(["busybox", "cat", path], capture_output=True, check=True).stdout.decode())
                subprocess.run(["busybox", "cp", path, copy], check=True)
                snapshots.append(Path(copy).read_text())
                shutil.copyfile(path, copy)
                snapshots.append(Path(copy).read_text())
        finally:
            stop.set()
            thread.join()
    for text in snapshots:
        assert check_consistent(text) >= 8 * 43


def test_lseek_to_zero_renders_anew(mount: Mount) -> None:
    with mount.client() as c:
        root = c.call("root", name="seek")["node"]
        fd = os.open(mount / f"{MEMTRACK}/seek", os.O_RDONLY)
        try:
            first = os.read(fd, 65536)
            c.call("add", node=root, bytes=100)
            assert os.read(fd, 65536) == b""            # same snapshot: at its end
            os.lseek(fd, 0, os.SEEK_SET)
            again = os.read(fd, 65536)
        finally:
            os.close(fd)
    assert first.startswith(b"Total memory usage: 0 bytes")
    assert again.startswith(b"Total memory usage: 100 bytes")


def test_read_only_files_refuse_writes_with_eio_and_keep_content(mount: Mount) -> None:
    with mount.client() as c:
        c.call("add", node=c.call("root", name="ro")["node"], bytes=5)
    before = mount.read(f"{MEMTRACK}/ro")
    done = subprocess.run(["bash", "-c", f"echo 0 > {mount / MEMTRACK}/ro"], capture_output=True, text=True)
    assert done.returncode != 0 and "Input/output error" in done.stderr
    assert mount.read(f"{MEMTRACK}/ro") == before


@pytest.mark.parametrize("written, record", [
    (b"<4>marker\n", "12,{seq},{usec},-;marker"),        # level 4, facility LOG_USER (the default)
    (b"plain\n", "12,{seq},{usec},-;plain"),              # no prefix: level 4, LOG_USER
    (b"<14>info", "14,{seq},{usec},-;info"),              # level 6 of facility 1
    (b"<30>daemon", "30,{seq},{usec},-;daemon"),          # facility 3 (LOG_DAEMON) kept
    (b"<3>kernel facility", "11,{seq},{usec},-;kernel facility"),  # facility 0 given: LOG_USER
    (b"<>empty", "8,{seq},{usec},-;empty"),               # no digits: level 0
    (b"<2051>wide", "11,{seq},{usec},-;wide"),             # LOG_FACILITY() keeps 8 bits: 256 -> 0 -> LOG_USER
    (b"<99999>wider", "1695,{seq},{usec},-;wider"),       # facility 12499 & 0xff = 211
    (b"<4x>not a prefix", "12,{seq},{usec},-;<4x>not a prefix"),
    (b"two\nlines\n", "12,{seq},{usec},-;two\\x0alines"),  # one write, one record
    (b"cut\0here", "12,{seq},{usec},-;cut"),              # a C string
])
def test_kmsg_writes_append_records_as_devkmsg_write_parses_them(mount: Mount, written: bytes,
                                                                 record: str) -> None:
    before = mount.kmsg()
    fd = os.open(mount / "dev/kmsg", os.O_WRONLY)
    try:
        assert os.write(fd, written) == len(written)
    finally:
        os.close(fd)
    new = mount.kmsg()[len(before):]
    assert len(new) == 1
    prefix, seq, usec, _ = new[0].split(",", 3)
    assert new[0] == record.format(seq=len(before), usec=usec)
    with open("/proc/uptime") as f:  # the host's clock since boot, as printk's (dmesg -T)
        assert abs(int(usec) / 1e6 - float(f.read().split()[0])) < 60


def test_a_kmsg_write_longer_than_a_record_is_einval(mount: Mount) -> None:
    before = mount.kmsg()
    fd = os.open(mount / "dev/kmsg", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as refused:
            os.write(fd, b"x" * 1025)  # PRINTKRB_RECORD_MAX is 1024
        assert refused.value.errno == errno.EINVAL
        assert os.write(fd, b"x" * 1024) == 1024
    finally:
        os.close(fd)
    assert [line.split(";", 1)[1] for line in mount.kmsg()[len(before):]] == ["x" * 1024]


def test_kmsg_returns_one_record_per_read_and_eagain_after_the_newest_when_nonblocking(mount: Mount) -> None:
    with mount.client() as c:
        for i in range(3):
            c.call("log", level=6, message=f"hello {i}")
    fd = os.open(mount / "dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        records = [os.read(fd, 8192) for _ in range(3)]
        with pytest.raises(BlockingIOError):
            os.read(fd, 8192)
        os.lseek(fd, 0, os.SEEK_SET)
        with pytest.raises(OSError) as small:
            os.read(fd, 5)  # smaller than a record: the kernel says EINVAL, and that record is gone
        assert small.value.errno == errno.EINVAL
        assert os.read(fd, 8192).endswith(b";hello 1\n")
    finally:
        os.close(fd)
    assert [re.fullmatch(rb"6,(\d+),(\d+),-;hello (\d)\n", r) is not None for r in records] == [True] * 3
    assert [int(r.split(b",")[1]) for r in records] == [0, 1, 2]


def test_a_blocking_kmsg_read_waits_for_the_next_record_and_a_signal_ends_it(mount: Mount) -> None:
    reader = subprocess.Popen([sys.executable, "-c", FOLLOW_KMSG, str(mount / "dev/kmsg")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline() == "at the end\n"
        wait_for(lambda: _sleeping_in(reader.pid, "request_wait_answer"), what="the reader to wait in read()")
        with mount.client() as c:
            c.call("log", level=6, message="woken")
        assert reader.stdout.readline().endswith(";woken\n")
        wait_for(lambda: _sleeping_in(reader.pid, "request_wait_answer"), what="the reader to wait again")
        reader.send_signal(signal.SIGINT)  # the read ends with EINTR and the handler runs
        assert reader.wait(10) == 130
        assert reader.stdout.read() == "interrupted\n"
    finally:
        reader.kill()
        reader.wait()
        reader.stdout.close()


# A reader of dev/kmsg (argv[1]) that has read every record there is, without waiting.
READ_TO_THE_END = """
import os, select, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
try:
    while os.read(fd, 8192):
        pass
except BlockingIOError:
    pass
"""

FOLLOW_KMSG = READ_TO_THE_END + """
os.set_blocking(fd, True)
print("at the end", flush=True)
try:
    while True:
        print(os.read(fd, 8192).decode(), end="", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def test_kmsg_poll_waits_for_the_next_record(mount: Mount) -> None:
    """poll(2) on dev/kmsg: not readable at the end of the log; a new record wakes a sleeping poller."""
    with mount.client() as c:
        c.call("log", level=6, message="before")
    fd = os.open(mount / "dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(BlockingIOError):
            while os.read(fd, 8192):
                pass
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        assert poller.poll(0) == []
        waiter = subprocess.Popen([sys.executable, "-c", POLL_KMSG, str(mount / "dev/kmsg")],
                                  stdout=subprocess.PIPE, text=True)
        # It reads to the end, then sleeps in poll(): only a wake-up from the daemon ends it in time.
        wait_for(lambda: _sleeping_in_poll(waiter.pid), what="the poller to sleep in poll()")
        with mount.client() as c:
            c.call("log", level=6, message="after")
        out, _ = waiter.communicate(timeout=30)
        assert out.strip() == str(select.POLLIN)
        assert poller.poll(0) == [(fd, select.POLLIN)]
        assert os.read(fd, 8192).endswith(b";after\n")
    finally:
        os.close(fd)


POLL_KMSG = READ_TO_THE_END + """
poller = select.poll()
poller.register(fd, select.POLLIN)
print(poller.poll(60000)[0][1])
"""


def _sleeping_in_poll(pid: int) -> bool:
    return _sleeping_in(pid, "poll")


def _sleeping_in(pid: int, function: str) -> bool:
    with open(f"/proc/{pid}/wchan") as wchan, open(f"/proc/{pid}/stat") as stat:
        return function in wchan.read() and stat.read().rsplit(")", 1)[1].split()[0] == "S"


def test_dynamic_debug_gates_the_leak_report(mount: Mount) -> None:
    control = mount / CONTROL
    listing = mount.read(CONTROL).decode()
    assert listing.splitlines()[0] == "# filename:lineno [module]function flags format"
    assert ('drivers/media/common/v4l2-memtrack/v4l2-memtrack.c:816 [v4l2_memtrack]v4l2_memtrack_print_debug '
            '=_ "v4l2-memtrack: Memory Tracker: %s\\n"') in listing
    with mount.client() as c:
        quiet = c.call("root", name="quiet")["node"]
        c.call("add", node=quiet, bytes=4096, name="fw")
        c.call("destroy", node=quiet)
        assert not [r for r in mount.kmsg() if r.startswith("7,")]

        for bad in ("file v4l2-memtrack.c", "file other.c +p", "bogus", "file v4l2-memtrack.c +x"):
            done = subprocess.run(["bash", "-c", f"echo '{bad}' > {control}"], capture_output=True, text=True)
            assert "Invalid argument" in done.stderr, bad
        assert "=_" in mount.read(CONTROL).decode()

        subprocess.run(["bash", "-c", f"echo 'file v4l2-memtrack.c +p' > {control}"], check=True)
        assert mount.read(CONTROL).decode().count(" =p ") == 2
        loud = c.call("root", name="loud", tgid=7, pid=8)["node"]
        inst = c.call("node", parent=loud, name="instance")["node"]
        c.call("add", node=inst, bytes=4096, name="udata")
        c.call("destroy", node=inst)
    debug = [r.split(";", 1)[1] for r in mount.kmsg() if r.startswith("7,")]
    assert debug == ["v4l2-memtrack: Memory Tracker: loud",
                     "v4l2-memtrack:   instance: usage=4096 bytes, count=0",
                     "v4l2-memtrack:     udata [leaf]: usage=4096 bytes, count=1"]


def test_a_long_write_to_dynamic_debug_control_is_e2big_and_changes_nothing(mount: Mount) -> None:
    """ddebug_proc_write() refuses 4096 bytes or more with E2BIG (and a warning in the kernel log).
    FUSE hands such a write over in pieces (128 KiB each): none of them may be applied."""
    query = b"file v4l2-memtrack.c +p\n"
    for size in (4096, 200 << 10):
        fd = os.open(mount / CONTROL, os.O_WRONLY)
        try:
            with pytest.raises(OSError) as refused:
                os.write(fd, (query * (size // len(query) + 1))[:size])
            assert refused.value.errno == errno.E2BIG
        finally:
            os.close(fd)
        assert " =p " not in mount.read(CONTROL).decode(), size
    assert [r for r in mount.kmsg() if r.endswith(";dyndbg: expected <4096 bytes into control")][0].startswith("4,")
    fd = os.open(mount / CONTROL, os.O_WRONLY)
    try:
        assert os.write(fd, (b" " * 4095 + query)[-4095:]) == 4095  # the longest write it takes
    finally:
        os.close(fd)
    assert mount.read(CONTROL).decode().count(" =p ") == 2


# What coreutils say for each change of the tree, under procfs (a missing name fails its lookup:
# ENOENT) and under sysfs/debugfs (no such operation: create EACCES, the others EPERM).
CHANGES = [
    (["touch", "{dir}/new"], "No such file or directory", "Permission denied"),
    (["mkdir", "{dir}/new"], "No such file or directory", "Operation not permitted"),
    (["ln", "-s", "x", "{dir}/new"], "No such file or directory", "Operation not permitted"),
    (["mknod", "{dir}/new", "p"], "No such file or directory", "Operation not permitted"),
    (["ln", "{file}", "{dir}/new"], "No such file or directory", "Operation not permitted"),
    (["mv", "{file}", "{dir}/new"], "No such file or directory", "Operation not permitted"),
    (["rm", "-f", "{file}"], "Operation not permitted", "Operation not permitted"),
    (["rmdir", "{dir}"], "Operation not permitted", "Operation not permitted"),
    (["chmod", "600", "{file}"], "Operation not permitted", "Operation not permitted"),
]


def test_changing_the_tree_fails_as_procfs_and_debugfs_fail(mount: Mount) -> None:
    """Not "Function not implemented" (FUSE's default), which no kernel filesystem answers."""
    places = {"proc": (mount / "proc/rk_dmabuf", mount / "proc/rk_dmabuf/size"),
              "debugfs": (mount / "sys/kernel/debug/dma_buf", mount / "sys/kernel/debug/dma_buf/bufinfo")}
    before = {path: mount.read(path) for path in ("proc/rk_dmabuf/size", "sys/kernel/debug/dma_buf/bufinfo")}
    for command, in_proc, in_debugfs in CHANGES:
        for place, expected in (("proc", in_proc), ("debugfs", in_debugfs)):
            directory, file = places[place]
            argv = [part.format(dir=directory, file=file) for part in command]
            done = subprocess.run(argv, capture_output=True, text=True)
            assert done.returncode != 0 and done.stderr.rstrip().endswith(expected), (argv, done.stderr)
    # The host's own procfs answers the same for a name it does not have.
    for command, in_proc, _ in CHANGES[:4]:
        host = subprocess.run([part.format(dir="/proc", file="/proc/version") for part in command],
                              capture_output=True, text=True)
        assert host.stderr.rstrip().endswith(in_proc), (command, host.stderr)
    # touch of an existing file succeeds, as on procfs; nothing changed.
    subprocess.run(["touch", str(mount / "proc/rk_dmabuf/size")], check=True)
    assert {path: mount.read(path) for path in before} == before
    assert sorted(os.listdir(mount / "proc/rk_dmabuf")) == ["dev", "peak", "sgt", "size"]
