"""Faults: a stopped driver, a stalled client, connection churn, memtrackfs killed under its users.

What test_device_nodes.py, test_vpu_nodes.py and test_lifecycle.py already cover (a silent or
stopped test driver, killed vpu_sim daemons and clients, a killed idle memtrackfs) is not repeated:
these are the faults with real applications streaming, and the daemon's resources under churn.
"""
from __future__ import annotations

import errno
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable

import psutil
import pytest

from memtrackfs.fs.entries import MAX_PINNED_PER_UID
from memtrackfs.mounts import is_stale
from memtrackfs.server.server import MAX_CONNECTIONS_PER_UID
from memtrackfs.testing.helpers import (
    Mount,
    memtrackfs,
    start_mount,
    start_vpu_sim,
    stop_process,
    wait_for,
)

TREE = "sys/kernel/debug/v4l2-memtrack"
TIMEOUT = 1.0  # --driver-timeout of the mounts here
BOUND = TIMEOUT + 1.5  # what one forwarded call may take at most: the timeout plus scheduling slack


def tasks_in_d_state(pids: Iterable[int]) -> list[str]:
    """Threads of these processes in uninterruptible sleep (state D in /proc/PID/task/TID/stat)."""
    found = []
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if state == "D":
                found.append(f"{pid}/{tid}")
    return found


def daemon_pid(mount: Mount) -> int:
    with mount.client() as c:
        return int(c.server["pid"])


def connect_raw(mount: Mount, first: bytes = b"") -> socket.socket:
    """A raw connection to the mount's socket, ``first`` sent already."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(mount.socket))
    if first:
        s.sendall(first)
    return s


def start_app(mount: Mount, *args: str) -> subprocess.Popen:
    """``vpu-sim play`` streaming; returns once it has printed its first progress line."""
    app = subprocess.Popen([sys.executable, "-m", "vpu_sim", "play", "--mount", str(mount.path), *args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = app.stdout.readline()
    assert line.startswith("play 1920x1080 h264: "), (line, app.stderr.read() if app.poll() is not None else "")
    return app


@pytest.fixture
def stoppable_board(tmp_path: Path):
    """A mount whose device nodes wait at most TIMEOUT for their driver, with vpu_sim serving them."""
    mount = start_mount(tmp_path, "--driver-timeout", str(TIMEOUT))
    driver = start_vpu_sim(mount)
    try:
        yield mount, driver
    finally:
        os.kill(driver.pid, signal.SIGCONT)
        stop_process(driver)
        mount.umount()


def test_a_stopped_driver_fails_a_streaming_apps_ioctls_in_bounded_time(stoppable_board) -> None:
    mount, driver = stoppable_board
    memtrackfs_pid = daemon_pid(mount)
    app = start_app(mount, "--seconds", "60")
    try:
        os.kill(driver.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        stuck: list[str] = []
        while app.poll() is None and time.monotonic() - stopped < 15:
            stuck += tasks_in_d_state([app.pid, memtrackfs_pid])
            # The mount keeps answering everyone else while the driver is stopped.
            started = time.monotonic()
            assert mount.read("proc/rk_dmabuf/size").startswith(b"Total: ")
            assert b"instance" in mount.read(f"{TREE}/amphion-vpu")
            assert time.monotonic() - started < 0.5
            time.sleep(0.05)
        took = time.monotonic() - stopped
        # The ioctl in flight fails after the timeout, then close() waits one more for the release.
        assert app.poll() is not None, "the app still hangs 15 s after its driver stopped"
        assert took < 3 * BOUND, f"the app needed {took:.1f} s to fail"
        assert not stuck, f"threads in D state: {stuck}"
        stderr = app.stderr.read()
        assert app.returncode == 1 and stderr.startswith("vpu-sim: play: VIDIOC_"), stderr
        assert "Connection timed out (the driver did not answer within memtrackfs's --driver-timeout" in stderr
    finally:
        app.kill()
        app.wait()
        os.kill(driver.pid, signal.SIGCONT)
    # Once it runs again, the driver serves new applications as before.
    done = subprocess.run([sys.executable, "-m", "vpu_sim", "play", "--mount", str(mount.path), "--seconds", "0.5"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and " frames" in done.stdout, done.stderr


def test_opens_that_timed_out_while_the_driver_was_stopped_leave_no_instance(stoppable_board) -> None:
    """Opens queued for a stopped driver fail with ETIMEDOUT; when it runs again it serves them and
    makes instances nobody will close. Each late success is released at once, so the instances
    (8 per decoder core: they would all be used up) are freed."""
    mount, driver = stoppable_board
    failures: list[int] = []

    def open_decoder() -> None:
        try:
            os.close(os.open(mount / "dev/video0", os.O_RDWR))
        except OSError as exc:
            failures.append(exc.errno)

    os.kill(driver.pid, signal.SIGSTOP)
    try:
        openers = [threading.Thread(target=open_decoder) for _ in range(10)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join(3 * BOUND)
        assert failures == [errno.ETIMEDOUT] * 10, failures
    finally:
        os.kill(driver.pid, signal.SIGCONT)
    # The driver now opens (and logs) them all, and each is released as soon as it answers.
    wait_for(lambda: "instance" not in mount.tree(), timeout=15, what="the instances of timed-out opens to go")
    assert mount.tree().count("[leaf]") == mount.tree().count("fw [leaf]") + mount.tree().count("rpc [leaf]")
    done = subprocess.run([sys.executable, "-m", "vpu_sim", "play", "--mount", str(mount.path), "--seconds", "0.5"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and " frames" in done.stdout, done.stderr


# Callers with large ioctl arguments (16000 bytes each way: _IOWR('V', 200, 16000)), 4 threads
# each calling 4 times, printing how long each call took. ctypes' ioctl() lets the threads call at
# once (fcntl.ioctl holds the GIL through the call when its buffer is over 1 KiB).
LARGE_IOCTLS = r"""
import ctypes, os, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NONBLOCK)
print("open", flush=True)
sys.stdin.readline()  # the driver is stopped now
cmd = (3 << 30) | (16000 << 16) | (ord("V") << 8) | 200
lock = threading.Lock()
def caller():
    arg = ctypes.create_string_buffer(16000)
    for _ in range(4):
        started = time.monotonic()
        result = "ok" if libc.ioctl(fd, cmd, arg) == 0 else str(ctypes.get_errno())
        with lock:
            print(result, round(time.monotonic() - started, 2), flush=True)
threads = [threading.Thread(target=caller) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
"""


def test_a_stopped_driver_bounds_every_call_even_with_large_arguments(stoppable_board) -> None:
    """Each forwarded ioctl carries its argument to the driver; a stopped driver reads none of
    them. The calls must still fail after --driver-timeout, however much is waiting for it."""
    mount, driver = stoppable_board
    callers = subprocess.Popen([sys.executable, "-c", LARGE_IOCTLS, str(mount / "dev/video0")],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert callers.stdout.readline() == "open\n"
    os.kill(driver.pid, signal.SIGSTOP)
    callers.stdin.write("go\n")
    callers.stdin.flush()
    results: list[str] = []
    reader = threading.Thread(target=lambda: results.extend(callers.stdout), daemon=True)
    reader.start()
    try:
        # 16 calls, 4 at a time, each failing after TIMEOUT: about 4 s when every call is bounded.
        reader.join(4 * BOUND + 5)
        hung = reader.is_alive()
        in_time = list(results)
        stuck = tasks_in_d_state([callers.pid, daemon_pid(mount)]) if hung else []
    finally:
        os.kill(driver.pid, signal.SIGCONT)  # lets a blocked call through, so the test can end
        try:
            callers.wait(30)
        except subprocess.TimeoutExpired:
            callers.kill()
            callers.wait()
        reader.join(5)
    assert not hung, (f"only {len(in_time)} of 16 ioctls to the stopped driver returned within "
                      f"{4 * BOUND + 5:.0f} s (errno, seconds): {[r.strip() for r in in_time]}; the rest "
                      f"returned once it was continued: {[r.strip() for r in results[len(in_time):]]}")
    assert not stuck, f"threads in D state: {stuck}"
    assert len(results) == 16
    for line in results:
        code, took = line.split()
        # ETIMEDOUT; or ENODEV, should the daemon drop a driver that stopped reading its socket.
        assert int(code) in (errno.ETIMEDOUT, errno.ENODEV) and float(took) < BOUND, line


def test_a_client_that_stalls_mid_request_blocks_nobody(memtrackfs_mount: Mount) -> None:
    mount = memtrackfs_mount
    stalled = []
    try:
        # Half a request line, then silence; 50 of them.
        for _ in range(50):
            stalled.append(connect_raw(mount, b'{"id": 1, "op": "root", "na'))
        # And one that pipelines far more than its socket holds and never reads the replies.
        flood = connect_raw(mount)
        flood.setblocking(False)
        request = b'{"id": 7, "op": "roots"}\n'
        try:
            for _ in range(100_000):
                flood.send(request)
        except BlockingIOError:
            pass  # its buffers are full: the daemon's thread for it waits in send()
        stalled.append(flood)
        started = time.monotonic()
        with mount.client() as c:
            root = c.call("root", name="others", timeout=2)["node"]
            for i in range(200):
                c.call("add", node=root, bytes=4096, name=f"buf{i}", timeout=2)
            assert c.call("read", node=root, timeout=2)["bytes"] == 200 * 4096
        assert mount.read(f"{TREE}/others").count(b"[leaf]") == 200
        assert time.monotonic() - started < 5
        # The stalled ones were waited for, not dropped: the rest of the line completes the request.
        stalled[0].sendall(b'me": "late"}\n')
        stalled[0].settimeout(5)
        assert stalled[0].recv(4096).startswith(b'{"node":')
        assert sorted(os.listdir(mount / TREE)) == ["late", "others"]
    finally:
        for s in stalled:
            s.close()


def _churn(path: str, rounds: int) -> None:
    """Connections that end every way a client can end one."""
    for i in range(rounds):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        kind = i % 6
        if kind == 1:    # a driver that creates a tree, then goes without reading a reply
            s.sendall(b'{"id":1,"op":"hello","destroy_on_close":true}\n{"id":2,"op":"root","name":"churn%d"}\n' % i)
        elif kind == 2:  # half a request
            s.sendall(b'{"id":1,"op":"ad')
        elif kind == 3:  # a request answered, then a clean close
            s.sendall(b'{"id":1,"op":"roots"}\n')
            s.recv(4096)
        elif kind == 4:  # a buffer held by the connection: released with it
            s.sendall(b'{"id":1,"op":"heap_alloc","heap":"system","bytes":65536}\n')
        elif kind == 5:  # a half-close first
            s.shutdown(socket.SHUT_WR)
        s.close()


def test_thousands_of_connect_disconnect_cycles_leave_no_fds_threads_or_state(memtrackfs_mount: Mount) -> None:
    mount = memtrackfs_mount
    daemon = psutil.Process(daemon_pid(mount))
    idle_fds = daemon.num_fds()
    _churn(str(mount.socket), 60)  # warm-up: the first thread stacks, the allocator's arenas
    # Cleaned up: the state they held, and their sockets (closed last, just before their threads end).
    wait_for(lambda: mount.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n" and not os.listdir(mount / TREE)
             and daemon.num_fds() <= idle_fds, what="the warm-up connections to be cleaned up")
    fds, threads, rss = daemon.num_fds(), daemon.num_threads(), daemon.memory_info().rss
    _churn(str(mount.socket), 3000)

    def settled() -> bool:
        return daemon.num_fds() <= fds and daemon.num_threads() <= threads

    try:
        wait_for(settled, timeout=10, what="the daemon's fds and threads to return to where they were")
    except TimeoutError:
        pytest.fail(f"after 3000 connections: fds {fds} -> {daemon.num_fds()}, "
                    f"threads {threads} -> {daemon.num_threads()}")
    # Every connection's state went with it: trees of destroy_on_close drivers, held buffers.
    assert os.listdir(mount / TREE) == []
    assert mount.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n"
    assert mount.read("sys/kernel/debug/dma_buf/bufinfo").endswith(b"\nTotal 0 objects, 0 bytes\n")
    # Memory: nothing per connection stays (3000 leaked sessions with their threads' stacks would
    # be tens of MiB); the allocator may keep a little: allow 4 MiB.
    assert daemon.memory_info().rss < rss + (4 << 20), (rss, daemon.memory_info().rss)
    with mount.client() as c:  # and it still serves
        assert c.call("roots")["roots"] == []


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_of_memtrackfs_under_a_driver_and_an_app(tmp_path: Path, seed: int) -> None:
    """memtrackfs killed at a random point of a stream: the driver and the app get clear errors and
    exit, nobody hangs in D state, and `memtrackfs mount` recovers the stale mount point."""
    mount = start_mount(tmp_path)
    pid = daemon_pid(mount)
    driver = start_vpu_sim(mount)
    app = start_app(mount, "--seconds", "60", "--export-to", "display-subsystem")
    try:
        time.sleep(random.Random(seed).uniform(0.0, 1.5))
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        stuck: list[str] = []
        while (app.poll() is None or driver.poll() is None) and time.monotonic() < deadline:
            stuck += tasks_in_d_state([app.pid, driver.pid])
            time.sleep(0.05)
        assert app.poll() is not None and driver.poll() is not None, "an app or the driver hangs"
        assert not stuck, f"threads in D state: {stuck}"
        app_err = app.stderr.read()
        assert app.returncode == 1 and app_err.startswith("vpu-sim: play: "), app_err
        assert "Traceback" not in app_err
        assert any(reason in app_err for reason in ("Transport endpoint is not connected",
                                                    "Software caused connection abort",
                                                    "memtrackfs daemon went away",
                                                    "connection to memtrackfs lost",
                                                    "memtrackfs daemon closed the connection")), app_err
        driver_out = driver.output()
        assert driver.returncode == 1 and "memtrackfs closed the connection" in driver_out, driver_out
        assert "Traceback" not in driver_out
        wait_for(lambda: is_stale(str(mount.path)), timeout=5, what="the mount to turn stale")
        with pytest.raises(OSError) as stale:
            os.listdir(mount.path)
        assert stale.value.errno == errno.ENOTCONN

        again = memtrackfs("mount", str(mount.path), "--socket", str(mount.socket))
        assert b"recovered stale mount" in again.stderr
        assert sorted(os.listdir(mount.path)) == ["dev", "proc", "sys"]
        assert os.listdir(mount / TREE) == [] and mount.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n"
        driver = start_vpu_sim(mount)
        done = subprocess.run([sys.executable, "-m", "vpu_sim", "play", "--mount", str(mount.path),
                               "--seconds", "0.5"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and " frames" in done.stdout, done.stderr
    finally:
        app.kill()
        app.wait()
        stop_process(driver)
        mount.umount()


# -- the socket under pressure: out of descriptors, too many peers, floods -------------------------

def test_the_socket_survives_running_out_of_file_descriptors(memtrackfs_mount: Mount) -> None:
    """accept() failing with EMFILE must not end the accept loop: the peers beyond the limit wait
    in the backlog and are served once descriptors are free; the mount answers all along."""
    mount = memtrackfs_mount
    pid = daemon_pid(mount)
    daemon = psutil.Process(pid)
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    limit = daemon.num_fds() + 2
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))
    peers = []
    try:
        for _ in range(6):
            peers.append(connect_raw(mount, b'{"id": 1, "op": "roots"}\n'))
        wait_for(lambda: daemon.num_fds() >= limit, what="the daemon to reach its fd limit")
        answered = []
        for s in peers:
            s.settimeout(5 if not answered else 0.3)
            try:
                answered.append(s.recv(4096))
            except socket.timeout:
                break
        assert 1 <= len(answered) < len(peers), answered  # the others wait: accept() fails with EMFILE
        assert mount.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n"
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    for s in peers[len(answered):]:
        s.settimeout(10)
        answered.append(s.recv(4096))
    assert answered == [b'{"roots":[],"id":1,"ok":true}\n'] * len(peers)
    for s in peers:
        s.close()
    with mount.client() as c:
        assert c.call("roots", timeout=10)["roots"] == []


def test_connections_are_capped_per_user_with_a_clear_refusal(memtrackfs_mount: Mount) -> None:
    mount = memtrackfs_mount
    peers = []
    try:
        for _ in range(MAX_CONNECTIONS_PER_UID):
            peers.append(connect_raw(mount))
        # Each one is served (the last one too, so all have been accepted).
        peers[-1].sendall(b'{"id": 1, "op": "roots"}\n')
        peers[-1].settimeout(10)
        assert peers[-1].recv(4096).endswith(b'"ok":true}\n')
        with pytest.raises(ConnectionError) as refused:
            mount.client()
        assert refused.value.errno == errno.ECONNREFUSED
        assert f"too many connections ({MAX_CONNECTIONS_PER_UID} in all, {MAX_CONNECTIONS_PER_UID} from uid 0" \
            in str(refused.value)
        assert mount.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n"  # FUSE does not care
        peers.pop().close()

        def connected() -> bool:  # once the daemon has seen that one go, there is room again
            try:
                mount.client().close()
            except ConnectionError:
                return False
            return True

        wait_for(connected, what="a connection once one is free")
    finally:
        for s in peers:
            s.close()


def _roots_flood(mount: Mount, roots: int, name_length: int) -> None:
    with mount.client() as c:
        for i in range(roots):
            c.call("root", name=f"{i:04d}".ljust(name_length, "x"))


def test_a_client_that_never_reads_its_replies_pins_little(memtrackfs_mount: Mount) -> None:
    """Pipelined requests with large replies from a peer that reads nothing: the daemon stops
    reading from it once its unsent replies reach the bound, instead of answering everything."""
    mount = memtrackfs_mount
    _roots_flood(mount, 300, 200)  # each `roots` reply: about 70 KB
    daemon = psutil.Process(daemon_pid(mount))
    rss = daemon.memory_info().rss
    flood = connect_raw(mount)
    flood.setblocking(False)
    sent = 0
    try:
        request = b'{"id": 7, "op": "roots"}\n'
        try:
            for _ in range(20_000):
                flood.send(request)
                sent += 1
        except BlockingIOError:
            pass  # the daemon has stopped reading from it
        with mount.client() as c:
            assert len(c.call("roots", timeout=10)["roots"]) == 300  # others are served
        grown = daemon.memory_info().rss - rss
        assert grown < 48 << 20, f"{sent} pipelined requests never read pinned {grown >> 20} MiB"
    finally:
        flood.close()


FLOODER = r"""
import socket, sys, threading, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
count = int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
threading.Thread(target=lambda: s.sendall(b'{"id": 7, "op": "heaps"}\n' * count), daemon=True).start()
replies = s.recv(1 << 20).count(b"\n")
print("flooding", flush=True)  # the daemon is answering the batch
while replies < count:
    replies += s.recv(1 << 20).count(b"\n")
print(time.monotonic(), flush=True)
"""


def test_a_flooding_client_does_not_hold_up_another(memtrackfs_mount: Mount) -> None:
    """While one client pipelines a large batch of heavy requests (`heaps` with a fragmented CMA
    heap: every free range is listed), another client's request-reply exchanges are served in
    between (turns), not after the whole batch."""
    mount = memtrackfs_mount
    with mount.client() as setup:
        buffers = [setup.call("heap_alloc", heap="cma", bytes=4096)["buffer"] for _ in range(4000)]
        for buffer in buffers[::2]:
            setup.call("put", buffer=buffer)
        assert [h["free_ranges"] for h in setup.call("heaps")["heaps"] if h["name"] == "cma"][0] > 2000
        flooder = subprocess.Popen([sys.executable, "-c", FLOODER, str(mount.socket), "8000"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            with mount.client() as c:
                root = c.call("root", name="other")["node"]
                assert flooder.stdout.readline() == "ready\n"
                flooder.stdin.write("go\n")
                flooder.stdin.flush()
                assert flooder.stdout.readline() == "flooding\n"
                for _ in range(30):
                    c.call("add", node=root, bytes=1, timeout=60)
                served = time.monotonic()
                flood_done = float(flooder.stdout.readline())
            assert served < flood_done, f"the other client was served {served - flood_done:.2f} s after the flood ended"
        finally:
            flooder.kill()
            flooder.wait()


# -- open files and the renderings they hold --------------------------------------------------------

def _big_tree(mount: Mount, leaves: int = 50_000) -> str:
    """A tracker file of about 3 MB; returns its path relative to the mount."""
    with mount.client() as c:
        root = c.call("root", name="big")["node"]
        futures = [c.submit("add", node=root, bytes=4096, name=f"buffer-{i}") for i in range(leaves)]
        for future in futures:
            future.result(60)
    return f"{TREE}/big"


def test_opens_of_the_same_state_share_one_rendering(memtrackfs_mount: Mount) -> None:
    """100 open files of a 3 MB file, each read once, the model unchanged: one rendering between
    them, not 100 (15,000 such fds took a daemon from 20 to 649 MiB)."""
    mount = memtrackfs_mount
    path = mount / _big_tree(mount)
    daemon = psutil.Process(daemon_pid(mount))
    rss = daemon.memory_info().rss
    files = [open(path, "rb", buffering=0) for _ in range(100)]
    try:
        assert all(f.read(1) == b"T" for f in files)
        grown = daemon.memory_info().rss - rss
        assert grown < 64 << 20, f"100 opens of one state hold {grown >> 20} MiB"
    finally:
        for f in files:
            f.close()


def test_what_one_user_can_pin_in_open_files_is_capped(memtrackfs_mount: Mount) -> None:
    """Each open of a new state holds its own rendering; one user's open files may hold at most
    MAX_PINNED_PER_UID, past which a read fails with ENOMEM. Closing them frees it all."""
    mount = memtrackfs_mount
    path = mount / _big_tree(mount)
    daemon = psutil.Process(daemon_pid(mount))
    rss = daemon.memory_info().rss
    files, refused = [], None
    try:
        with mount.client() as c:
            tick = c.call("root", name="tick")["node"]
            for i in range(200):  # 200 renderings of 3 MB: more than the cap
                c.call("set", node=tick, bytes=i + 1)  # a change of the model: the next open renders anew
                f = open(path, "rb", buffering=0)
                files.append(f)
                try:
                    f.read(1)
                except OSError as exc:
                    refused = exc
                    break
        assert refused is not None and refused.errno == errno.ENOMEM, refused
        grown = daemon.memory_info().rss - rss
        # The cap, plus what rendering itself leaves to the allocator (its lines, before the join).
        assert grown < MAX_PINNED_PER_UID + (128 << 20), f"{len(files)} opens hold {grown >> 20} MiB"
    finally:
        for f in files:
            f.close()
    with open(path, "rb") as f:
        assert f.read(1) == b"T"
