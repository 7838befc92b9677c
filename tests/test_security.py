"""Security: who may use the socket and the mount, and that no name can forge a line in a file.

test_socket.py already checks that the socket is born 0600 and that another user cannot connect
to it; here: the daemon's own SO_PEERCRED check behind the file mode, the mount as seen by a
real unprivileged user (nobody) without and with --allow-other, and hostile names in every field
that ends up in a file.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from memtrackfs.client import MemtrackClient, MemtrackError
from memtrackfs.mounts import default_socket_path, read_mounts
from memtrackfs.testing.helpers import Mount, memtrackfs, start_mount

MEMTRACK = "sys/kernel/debug/v4l2-memtrack"
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def as_nobody(*command: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([*NOBODY, *command], input=stdin, capture_output=True, text=True, timeout=30)


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory every user may enter (the tests' tmp_path is 0700 to all but root), so that
    what nobody is refused, the mount refuses."""
    base = Path(tempfile.mkdtemp(prefix="memtrackfs-security-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=[False, True], ids=["private", "allow-other"])
def shared_mount(request: pytest.FixtureRequest, world_dir: Path) -> Iterator[Mount]:
    mount = start_mount(world_dir, *(["--allow-other"] if request.param else []))
    mount.allow_other = request.param  # type: ignore[attr-defined]
    try:
        yield mount
    finally:
        mount.umount()


# A peer that reaches the socket anyway (its mode widened by mistake): it sends a request that
# would create a root, then prints what it got back until the daemon closes the connection.
INTRUDER = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"id": 1, "op": "root", "name": "intruder"}\n')
except OSError:
    pass
s.settimeout(10)
data = b""
try:
    while chunk := s.recv(4096):
        data += chunk
except ConnectionResetError:  # closed with our request unread: the reply came before
    pass
sys.stdout.write(data.decode())
"""


def test_the_daemon_checks_the_peers_credentials_behind_the_socket_mode(world_dir: Path) -> None:
    mount = start_mount(world_dir)
    try:
        mount.socket.chmod(0o666)
        before = mount.kmsg()
        probe = as_nobody(sys.executable, "-c", INTRUDER, str(mount.socket))
        assert probe.returncode == 0, probe.stderr
        replies = [json.loads(line) for line in probe.stdout.splitlines()]
        assert replies == [{"id": None, "ok": False, "errno": "EACCES",
                            "error": "only the socket's owner and root may connect"}], probe.stdout
        assert os.listdir(mount / MEMTRACK) == [] and mount.kmsg() == before
    finally:
        mount.umount()


def test_another_user_sees_into_the_mount_only_with_allow_other_and_then_the_modes_hold(shared_mount: Mount) -> None:
    mount = shared_mount
    with MemtrackClient(str(mount.socket)) as c:
        c.call("add", node=c.call("root", name="vpu")["node"], bytes=4096, name="fw")
        buffer = c.call("heap_alloc", heap="system", bytes=3 << 20, name="frame")["buffer"]
        assert mount.read("proc/rk_dmabuf/peak") == b"Peak: 3 MiB\n"
        assert "mnt" in as_nobody("ls", str(mount.path.parent)).stdout.split()  # up to the mount point: yes

        listing = as_nobody("ls", str(mount.path))
        size = as_nobody("cat", str(mount / "proc/rk_dmabuf/size"))
        if not mount.allow_other:  # type: ignore[attr-defined]
            # FUSE refuses every other user anything on the mount, even a stat of its root.
            for done in (listing, size, as_nobody("stat", str(mount.path)),
                         as_nobody("cat", str(mount / "dev/kmsg"))):
                assert done.returncode != 0 and "Permission denied" in done.stderr, done
            return
        assert listing.stdout.split() == ["dev", "proc", "sys"], listing
        assert size.stdout == "Total: 3072 KiB\n", size
        assert as_nobody("cat", str(mount / "proc/rk_dmabuf/peak")).stdout == "Peak: 3 MiB\n"
        assert as_nobody("cat", str(mount / f"sys/kernel/dmabuf/buffers/{buffer}/size")).stdout == f"{3 << 20}\n"
        # 0644: others read it (dd opens it and reads nothing: a read would wait for a record).
        assert as_nobody("dd", f"if={mount / 'dev/kmsg'}", "count=0", "status=none").returncode == 0
        refused = {
            # 0644 root's: only root resets the peak.
            "write peak": as_nobody("sh", "-c", f"echo 0 > {mount / 'proc/rk_dmabuf/peak'}"),
            # 0444: refused before the file's EIO.
            "write size": as_nobody("sh", "-c", f"echo 0 > {mount / 'proc/rk_dmabuf/size'}"),
            # sys/kernel/debug is 0700: nothing below it, whatever its own mode.
            "list debug": as_nobody("ls", str(mount / "sys/kernel/debug")),
            "read tree": as_nobody("cat", str(mount / MEMTRACK / "vpu")),
            "read bufinfo": as_nobody("cat", str(mount / "sys/kernel/debug/dma_buf/bufinfo")),
            "enable leak report": as_nobody("sh", "-c", f"echo 'file v4l2-memtrack.c +p' > "
                                                        f"{mount / 'sys/kernel/debug/dynamic_debug/control'}"),
        }
        for what, done in refused.items():
            assert done.returncode != 0 and "Permission denied" in done.stderr, (what, done)
        assert mount.read("proc/rk_dmabuf/peak") == b"Peak: 3 MiB\n"
        assert b" =_ " in mount.read("sys/kernel/debug/dynamic_debug/control")
        subprocess.run(["sh", "-c", f"echo 0 > {mount / 'proc/rk_dmabuf/peak'}"], check=True)  # root may
        assert mount.read("proc/rk_dmabuf/peak") == b"Peak: 0 MiB\n"


# -- no name can forge a line ---------------------------------------------------------------------

HOSTILE = [
    "a\nb", "a\rb", "a\r\nb", "\x1b[2K\rfake", "\x1b]0;title\x07", "nul\x00byte", "tab\tx", "vt\x0bx",
    "ff\x0cx", "fs\x1cx", "nel\x85x", "del\x7fx", "ls\u2028x", "ps\u2029x", "rlo\u202ex", "zw\u200bx",
    "bom\ufeffx", "nbsp\u00a0x", "bad\udc80x",
    # Whole lines, joined by the line separators a reader may split on.
    "fw [leaf] usage: 1\u2028  forged [leaf] usage: 999",
    "fw\n  forged [leaf] usage: 999",
]


def _try(call) -> bool:
    """True if the daemon took the name; False if it refused it, as it must: EINVAL, clearly."""
    try:
        call()
        return True
    except MemtrackError as exc:
        assert exc.errno_name == "EINVAL" and "control character" in str(exc), exc
        return False


# A process whose command name (what Rockchip names its buffers after) is hostile: it allocates
# a buffer without a name and keeps it until told to go.
COMM = r"""
import ctypes, sys
from memtrackfs.client import MemtrackClient
ctypes.CDLL(None).prctl(15, ctypes.c_char_p(sys.argv[2].encode()), 0, 0, 0)  # PR_SET_NAME
with MemtrackClient(sys.argv[1]) as c:
    print(c.call("heap_alloc", heap="system", bytes=4096)["name"], flush=True)
    sys.stdin.readline()
"""


def lines_of(data: bytes) -> tuple[int, int]:
    """Lines as a C reader counts them ('\\n') and as Python's str.splitlines() does (what the
    project's own parsers use: memtrackfs snapshot/record/diff)."""
    return data.count(b"\n"), len(data.decode("utf-8", errors="replace").splitlines())


def test_no_name_can_forge_a_line_in_any_file(memtrackfs_mount: Mount) -> None:
    mount = memtrackfs_mount
    comm_procs = []
    with MemtrackClient(str(mount.socket)) as c:
        kmsg_before = len(mount.kmsg())
        victim = c.call("root", name="victim")["node"]
        roots, nodes, leaves = {"victim"}, 0, 0
        buffers: list[int] = []
        attached = 0
        logged = 0
        for name in HOSTILE:
            if _try(lambda: c.call("root", name=name)):
                roots.add(name)
            if _try(lambda: c.call("node", parent=victim, name=name)):
                nodes += 1
            if _try(lambda: c.call("add", node=victim, bytes=1, name=name)):
                leaves += 1
            short = name[:32]
            for fields in ({"name": short}, {"comm": name[:15]}):
                try:
                    buffers.append(c.call("heap_alloc", heap="system", bytes=4096, **fields)["buffer"])
                except MemtrackError as exc:
                    assert exc.errno_name == "EINVAL", exc
            try:
                buffers.append(c.call("export", exporter=name, bytes=4096)["buffer"])
            except MemtrackError as exc:
                assert exc.errno_name == "EINVAL", exc
            # DRM PRIME keeps the mapped scatter list, so rk_dmabuf/sgt lists the target too.
            target = c.call("export", exporter="drm", bytes=4096, name="target", cache_sgt_mapping=True)["buffer"]
            buffers.append(target)
            try:
                c.call("map", attachment=c.call("attach", buffer=target, device=name)["attachment"])
                attached += 1
            except MemtrackError as exc:
                assert exc.errno_name == "EINVAL", exc
            with pytest.raises(MemtrackError) as refused:
                c.call("register_device", name=name)
            assert refused.value.errno_name == "EINVAL"
            try:
                MemtrackClient(str(mount.socket), client=name).close()
                logged += 2  # connected, disconnected
            except MemtrackError as exc:
                assert exc.errno_name == "EINVAL", exc
            if not any(0xD800 <= ord(ch) < 0xE000 for ch in name):  # see the next test
                c.call("log", message=name)
                logged += 1
        target = c.call("export", exporter="drm", bytes=4096, name="target", cache_sgt_mapping=True)["buffer"]
        c.call("map", attachment=c.call("attach", buffer=target, device="vop")["attachment"])
        buffers.append(target)
        attached += 1
        for comm in ("a\nb", "\x1b[2J\x1b[H", "ls\u2028x"[:5]):
            proc = subprocess.Popen([sys.executable, "-c", COMM, str(mount.socket), comm],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            comm_procs.append(proc)
            shown = proc.stdout.readline().rstrip("\n")
            assert shown.isprintable() and shown.startswith(f"{proc.pid}-"), repr(shown)
        try:
            # Every file: as many lines as objects, counted either way.
            expect = {f"{MEMTRACK}/victim": 2 + nodes + leaves,
                      "proc/rk_dmabuf/dev": 2 + len(buffers) + len(comm_procs),
                      "proc/rk_dmabuf/sgt": 2 + attached,  # one 4 KiB segment each
                      "sys/kernel/debug/dma_buf/bufinfo": 5 + 4 * (len(buffers) + len(comm_procs)) + attached,
                      "sys/kernel/debug/dynamic_debug/control": 3, "proc/rk_dmabuf/size": 1,
                      "proc/rk_dmabuf/peak": 1}
            expect.update({f"{MEMTRACK}/{root}": 2 for root in roots - {"victim"}})
            for ino in os.listdir(mount / "sys/kernel/dmabuf/buffers"):
                expect[f"sys/kernel/dmabuf/buffers/{ino}/exporter_name"] = 1
            assert sorted(os.listdir(mount / MEMTRACK)) == sorted(roots)
            wrong = {path: (lines_of(mount.read(path)), n) for path, n in expect.items()
                     if lines_of(mount.read(path)) != (n, n)}
            assert not wrong, f"(newlines, str.splitlines()) vs objects: {wrong}"
            # Each record of the kernel log: one line of printable ASCII (printk escapes the rest).
            fd = os.open(mount / "dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            records = []
            try:
                while True:
                    records.append(os.read(fd, 8192))
            except BlockingIOError:
                pass  # after the newest
            finally:
                os.close(fd)
            assert all(lines_of(r) == (1, 1) and r.isascii() and r[:-1].decode().isprintable() for r in records)
            assert len(records) == kmsg_before + logged
            # The project's own reader of these files sees exactly the objects made.
            snap = subprocess.run([sys.executable, "-m", "memtrackfs", "snapshot", "--mount", str(mount.path), "--json"],
                                  capture_output=True, text=True, timeout=30)
            assert snap.returncode == 0, snap.stderr
            tracker = json.loads(snap.stdout)["trackers"]["victim"]
            assert len(tracker["nodes"]) == 1 + nodes
            assert sum(count for node in tracker["nodes"].values() for count, _ in node["leaves"].values()) == leaves
            assert not any("forged" == leaf for node in tracker["nodes"].values() for leaf in node["leaves"])
        finally:
            for proc in comm_procs:
                proc.stdin.close()
                proc.wait(10)


def test_a_log_message_cannot_break_the_kernel_log(memtrackfs_mount: Mount) -> None:
    """The log op takes any text (printk escapes what is not printable ASCII). A lone surrogate
    (valid JSON: "\\udc80") must be refused or escaped like the rest, and the records after it
    stay readable."""
    mount = memtrackfs_mount
    with MemtrackClient(str(mount.socket)) as c:
        c.call("log", message="before")
        try:
            c.call("log", message="bad\udc80x")
            taken = 1
        except MemtrackError as exc:
            assert exc.errno_name == "EINVAL", exc
            taken = 0
        c.call("log", message="after")
    messages = [line.split(";", 1)[1] for line in mount.kmsg()]
    assert messages[-2 - taken] == "before" and messages[-1] == "after", messages
    assert all(m.isascii() and m.isprintable() for m in messages), messages



def test_a_refused_peer_that_left_already_does_not_stop_the_socket(world_dir: Path) -> None:
    """The daemon refuses another user's connection with a reply; when that peer has gone before
    the reply is written (EPIPE), the socket must keep accepting everyone else."""
    mount = start_mount(world_dir)
    try:
        mount.socket.chmod(0o666)
        with mount.client() as c:
            pid = int(c.server["pid"])
        os.kill(pid, signal.SIGSTOP)  # so that the intruder is gone when its connection is accepted
        try:
            gone = as_nobody(sys.executable, "-c", "import socket, sys; socket.socket(socket.AF_UNIX)"
                                                   ".connect(sys.argv[1])", str(mount.socket))
            assert gone.returncode == 0, gone.stderr
        finally:
            os.kill(pid, signal.SIGCONT)
        with mount.client() as c:
            assert c.call("roots", timeout=10)["roots"] == []
    finally:
        mount.umount()


# Names that would make their v4l2-memtrack line read as another (a leaf, another depth, another
# process's node, an unnamed node), and names that only look like fields: the end of a line is
# fixed, so these read back exactly.
AMBIGUOUS = ["fw [leaf]", "[leaf]", "  b", " lead", "", "x (tgid=666, pid=666)", "y(tgid=1, pid=-1)"]
CLEAR = ["usage: 5", "x[leaf]", "a (tgid=1, pid=2) b", "[leaf] first", "trailing ", "(count=2)", "é-名前"]


def test_names_that_would_read_as_another_line_are_refused(memtrackfs_mount: Mount) -> None:
    mount = memtrackfs_mount
    with mount.client() as c:
        root = c.call("root", name="vpu", tgid=1000, pid=1000)["node"]
        for name in AMBIGUOUS:
            for op, fields in (("root", {}), ("node", {"parent": root}), ("add", {"node": root, "bytes": 1})):
                with pytest.raises(MemtrackError) as refused:
                    c.call(op, name=name, **fields)
                assert refused.value.errno_name == "EINVAL" and "would read as another line" in str(refused.value), \
                    (op, name, refused.value)
        instance = c.call("node", parent=root, name="instance", tgid=2001, pid=2001)["node"]
        for name in CLEAR:
            c.call("add", node=c.call("node", parent=instance, name=name, tgid=2001, pid=2001)["node"], bytes=4096)
            c.call("add", node=instance, bytes=512, name=name, tgid=2001, pid=2001)
    snap = json.loads(subprocess.run([sys.executable, "-m", "memtrackfs", "snapshot", "--mount", str(mount.path),
                                      "--json"], capture_output=True, check=True).stdout)
    nodes = snap["trackers"]["vpu"]["nodes"]
    assert list(nodes) == ["vpu", "vpu/instance[2001/2001]"] + [f"vpu/instance[2001/2001]/{name}[2001/2001]"
                                                                for name in CLEAR]
    assert nodes["vpu/instance[2001/2001]"]["leaves"] == {name: [1, 512] for name in CLEAR}
    assert snap["processes"] == {"1000": {"tracked": 0, "dmabuf_kib": 0},
                                 "2001": {"tracked": len(CLEAR) * (4096 + 512), "dmabuf_kib": 0}}


# -- files the daemon creates: never through another user's directory, link or file ----------------

def test_a_runtime_dir_another_user_made_is_refused(world_dir: Path) -> None:
    """Without $XDG_RUNTIME_DIR a user's sockets and logs go to $TMPDIR/memtrackfs-<uid>. If
    someone else made that directory first (with a link from the log's name to one of the user's
    files), the user's `memtrackfs mount` must refuse it, not truncate the file."""
    nobody = pwd.getpwnam("nobody")
    mnt, precious = world_dir / "mnt", world_dir / "precious.txt"
    mnt.mkdir()
    precious.write_text("the user's work\n")
    for path in (mnt, precious):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    tmp = world_dir / "tmp"  # the user's $TMPDIR: everyone may create in it, as in /tmp
    tmp.mkdir()
    tmp.chmod(0o1777)
    trap = tmp / f"memtrackfs-{nobody.pw_uid}"
    trap.mkdir()
    trap.chmod(0o777)  # made by another user (root, here) before the victim
    log_name = Path(default_socket_path(str(mnt))).with_suffix(".log").name
    (trap / log_name).symlink_to(precious)
    env = {key: value for key, value in os.environ.items()
           if key not in ("XDG_RUNTIME_DIR", "MEMTRACKFS_RUNTIME_DIR")}
    try:
        done = subprocess.run([*NOBODY, sys.executable, "-m", "memtrackfs", "mount", str(mnt)], capture_output=True,
                              text=True, timeout=30, env={**env, "TMPDIR": str(tmp)})
        assert done.returncode == 1, done
        assert f"runtime directory {trap} belongs to uid 0, not to you (uid {nobody.pw_uid})" in done.stderr
        assert precious.read_text() == "the user's work\n"
    finally:
        if any(m.mountpoint == str(mnt) for m in read_mounts()):
            subprocess.run(["fusermount3", "-uz", str(mnt)])


def test_a_socket_path_that_is_not_our_socket_is_refused_and_nothing_is_lost(world_dir: Path) -> None:
    """--socket naming a file (or a link, or the log beside it being a link) must not delete it,
    nor truncate the file the '.log' beside it names."""
    data, victim = world_dir / "data.txt", world_dir / "victim.txt"
    data.write_text("data\n")
    (world_dir / "data.log").write_text("notes\n")
    victim.write_text("victim\n")
    (world_dir / "link.sock").symlink_to(victim)
    (world_dir / "quiet.log").symlink_to(victim)
    cases = {"data.txt": "exists and is a file, not a socket of ours",
             "link.sock": "exists and is a symbolic link, not a socket of ours",
             "quiet.sock": "daemon log {dir}/quiet.log is a symbolic link: refusing to write through it"}
    try:
        for name, complaint in cases.items():
            done = memtrackfs("mount", str(world_dir / "mnt"), "--socket", str(world_dir / name), check=False)
            assert done.returncode == 1 and complaint.format(dir=world_dir) in done.stderr.decode(), (name, done)
        assert (data.read_text(), (world_dir / "data.log").read_text(), victim.read_text()) == \
            ("data\n", "notes\n", "victim\n")
    finally:
        for entry in read_mounts():
            if entry.mountpoint == str(world_dir / "mnt"):
                memtrackfs("umount", entry.mountpoint, check=False)


def test_the_daemon_log_is_appended_to_not_truncated(world_dir: Path) -> None:
    log = world_dir / "driver.log"
    log.write_text("an earlier run\n")
    mount = start_mount(world_dir)
    try:
        assert stat.S_IMODE(os.stat(mount.socket.parent).st_mode) == 0o755  # ours, as it was
        text = log.read_text()
        assert text.startswith("an earlier run\nmemtrackfs: daemon pid ") and f"mounting {mount.path}" in text
    finally:
        mount.umount()
