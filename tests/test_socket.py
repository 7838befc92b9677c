"""The driver socket: requests, errors that change nothing, context, ownership, notifications."""
from __future__ import annotations

import errno
import json
import os
import pwd
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from memtrackfs.client import MemtrackClient, MemtrackError
from memtrackfs.kernel import Kernel
from memtrackfs.server import server as server_module
from memtrackfs.server.protocol import MAX_LINE
from memtrackfs.server.server import DriverServer
from memtrackfs.testing.helpers import Mount, wait_for

TREE = "sys/kernel/debug/v4l2-memtrack"


def raw_session(mount: Mount, payload: bytes) -> list[dict]:
    """Send raw bytes, half-close, and return every reply line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(mount.socket))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_bad_requests_get_clear_errors_and_change_nothing(mount: Mount) -> None:
    with mount.client() as c:
        root = c.call("root", name="vpu")["node"]
        c.call("add", node=root, bytes=4096, name="fw")
    before = mount.read(f"{TREE}/vpu")
    bad = [
        b"this is not json",
        b"[1, 2]",
        b'{"id": 1}',
        b'{"id": 2, "op": "launch"}',
        b'{"id": 3, "op": "add", "node": %d, "bytes": -1}' % root,
        b'{"id": 4, "op": "add", "node": %d, "bytes": 18446744073709551616}' % root,
        b'{"id": 5, "op": "add", "node": %d, "bytes": "12"}' % root,
        b'{"id": 6, "op": "add", "node": 999999, "bytes": 1}',
        b'{"id": 7, "op": "add", "node": %d, "bytes": 1, "name": "a\\nb"}' % root,
        b'{"id": 8, "op": "root", "name": "a/b"}',
        b'{"id": 9, "op": "root", "name": "vpu"}',
        b'{"id": 10, "op": "add", "node": %d, "bytes": 1, "name": "%s"}' % (root, b"x" * 300),
        b'{"id": 11, "op": "add", "node": %d, "bytes": 1, "tgid": -5}' % root,
        b'{"id": 12, "op": "hello"}',
        b"x" * (2 << 20),
        b'{"id": 13, "op": "read", "node": %d}' % root,
    ]
    replies = raw_session(mount, b"\n".join(bad) + b"\n")
    errors = [(r.get("id"), r.get("errno")) for r in replies if not r["ok"]]
    assert errors == [(None, "EBADMSG"), (None, "EBADMSG"), (1, "ENOSYS"), (2, "ENOSYS"), (3, "EINVAL"),
                      (4, "EINVAL"), (5, "EINVAL"), (6, "ENOENT"), (7, "EINVAL"), (8, "EINVAL"),
                      (9, "EEXIST"), (10, "ENAMETOOLONG"), (11, "EINVAL"), (12, "EINVAL"), (None, "E2BIG")]
    assert all(r["error"] for r in replies if not r["ok"])
    assert replies[-1] == {"id": 13, "ok": True, "bytes": 4096}  # the connection survived all of it
    assert mount.read(f"{TREE}/vpu") == before


def test_context_defaults_to_the_peer_and_can_be_given(mount: Mount) -> None:
    child = subprocess.run([sys.executable, "-c", f"""
import os
from memtrackfs.client import MemtrackClient
with MemtrackClient({str(mount.socket)!r}) as c:
    root = c.call("root", name="ctx")["node"]
    c.call("add", node=root, bytes=1, name="mine")
    c.call("add", node=root, bytes=2, name="given", tgid=1234, pid=1240)
    c.call("add", node=root, bytes=3, name="zero", tgid=0, pid=0)
print(os.getpid())
"""], capture_output=True, text=True, check=True)
    pid = int(child.stdout)
    text = mount.read(f"{TREE}/ctx").decode()
    assert f"ctx (tgid={pid}, pid={pid}) usage: 6" in text
    assert f"mine [leaf] (tgid={pid}, pid={pid}) usage: 1" in text
    assert "given [leaf] (tgid=1234, pid=1240) usage: 2" in text
    assert "  zero [leaf] usage: 3" in text


def test_what_a_connection_made_outlives_it_unless_it_asked(mount: Mount) -> None:
    with mount.client() as c:
        c.call("add", node=c.call("root", name="kept")["node"], bytes=10)
    with mount.client(client="driver", destroy_on_close=True) as c:
        root = c.call("root", name="driver-owned")["node"]
        c.call("add", node=c.call("node", parent=root, name="instance")["node"], bytes=7, name="udata")
        assert sorted(os.listdir(mount / TREE)) == ["driver-owned", "kept"]
    # close() returns once the daemon let go of the connection's tree: no waiting, no settle.
    assert os.listdir(mount / TREE) == ["kept"]
    log = [r.split(";", 1)[1] for r in mount.kmsg()]
    assert any(m.startswith("memtrackfs: driver driver connected") for m in log)
    assert any(m.startswith("memtrackfs: driver driver disconnected") for m in log)


def test_a_tool_that_closes_leaves_nothing_behind(mount: Mount) -> None:
    """As the last close of a dma-buf fd frees it before close(2) returns: the next read sees it gone."""
    for _ in range(10):
        with mount.client() as c:
            for buffer in [c.submit("export", exporter="system", bytes=4096) for _ in range(500)]:
                c.submit("attach", buffer=buffer.result(10)["buffer"], device="vop")
        assert mount.read("proc/rk_dmabuf/size") == b"Total: 0 KiB\n"


def test_a_killed_driver_loses_its_tree(mount: Mount) -> None:
    driver = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from memtrackfs.client import MemtrackClient
c = MemtrackClient({str(mount.socket)!r}, client="doomed", destroy_on_close=True)
c.call("add", node=c.call("root", name="doomed")["node"], bytes=1, name="fw")
print("ready", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline() == "ready\n"
        assert os.listdir(mount / TREE) == ["doomed"]
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 5
        while os.listdir(mount / TREE) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.listdir(mount / TREE) == []
    finally:
        driver.kill()
        driver.wait()


def test_notifications_immediate_coalesced_and_off(mount: Mount) -> None:
    with mount.client() as c:
        root = c.call("root", name="n")["node"]
        inst = c.call("node", parent=root, name="instance")["node"]
        c.call("watch", node=inst)
        c.call("add", node=inst, bytes=10, name="a")
        c.call("add", node=inst, bytes=20)
        assert [c.events.get(timeout=2)["bytes"] for _ in range(2)] == [10, 30]

        c.call("delay", node=inst, ms=200)
        started = time.monotonic()
        for _ in range(5):
            c.call("add", node=inst, bytes=1)
        event = c.events.get(timeout=10)
        waited = time.monotonic() - started
        assert event == {"event": "notify", "node": inst, "bytes": 35}
        assert waited > 0.15  # held for the delay (how late it may come is the machine's, not ours)
        time.sleep(0.3)
        assert c.events.empty()  # five changes, one coalesced notification

        c.call("delay", node=inst, ms=-1)
        c.call("add", node=inst, bytes=1)
        time.sleep(0.3)
        assert c.events.empty()

        with pytest.raises(MemtrackError) as busy:
            c.call("watch", node=inst)
        assert busy.value.errno_name == "EBUSY"
        c.call("unwatch", node=inst)
        c.call("watch", node=inst)  # free again


def test_socket_is_private_to_its_owner(mount: Mount) -> None:
    assert stat.S_IMODE(os.stat(mount.socket).st_mode) == 0o600
    nobody = pwd.getpwnam("nobody")
    probe = subprocess.run(
        ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
         sys.executable, "-c",
         f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({str(mount.socket)!r})"],
        capture_output=True, text=True)
    assert probe.returncode != 0 and "PermissionError" in probe.stderr


def test_socat_example_from_the_readme(mount: Mount) -> None:
    request = '{"id":1,"op":"root","name":"from-socat"}\n{"id":2,"op":"add","node":1,"bytes":4096,"name":"fw"}\n'
    done = subprocess.run(["socat", "-", f"UNIX-CONNECT:{mount.socket}"], input=request,
                          capture_output=True, text=True, timeout=10, check=True)
    assert [json.loads(line)["ok"] for line in done.stdout.splitlines()] == [True, True]
    assert "fw [leaf]" in mount.read(f"{TREE}/from-socat").decode()


def test_dead_daemon_gives_a_clear_connection_error(tmp_path) -> None:
    with pytest.raises(ConnectionError) as err:
        MemtrackClient(str(tmp_path / "nothing.sock"))
    assert "is the mount running?" in str(err.value)


def test_connections_are_capped_in_all(tmp_path, monkeypatch) -> None:
    """The total cap, on a socket server in this process (every peer here is one user, so the
    per-user cap, tested on a mount in test_faults.py, would come first)."""
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 3)
    kernel = Kernel()
    path = str(tmp_path / "capped.sock")
    server = DriverServer(kernel, path)
    server.start()
    clients = []
    try:
        clients = [MemtrackClient(path) for _ in range(3)]
        with pytest.raises(ConnectionError) as refused:
            MemtrackClient(path)
        assert refused.value.errno == errno.ECONNREFUSED and "(3 in all, 3 from uid" in str(refused.value)
        clients.pop().close()

        def connected() -> bool:  # once its thread has noticed the close, the slot is free
            try:
                clients.append(MemtrackClient(path))
            except ConnectionError:
                return False
            return True

        wait_for(connected, timeout=5, what="a closed connection's slot to be free again")
    finally:
        for client in clients:
            client.close()
        server.close()
        kernel.shutdown()


def test_an_error_after_hello_is_not_taken_for_a_refusal(tmp_path) -> None:
    """The E2BIG answer to an over-long line has no id, as a refusal has; only before hello's
    reply is such an answer the reason the connection ends."""
    kernel = Kernel()
    path = str(tmp_path / "late.sock")
    server = DriverServer(kernel, path)
    server.start()
    try:
        c = MemtrackClient(path)
        c.submit("root", name="x" * MAX_LINE)          # answered E2BIG, with no id to match
        assert c.call("roots")["roots"] == []          # after it: the connection goes on
        server.close()
        assert c.closed.wait(5)
        with pytest.raises(ConnectionError) as gone:
            c.call("roots")
        assert "refused" not in str(gone.value) and "E2BIG" not in str(gone.value), gone.value
        c.close()
    finally:
        server.close()
        kernel.shutdown()


def test_admitting_a_connection_takes_no_lock_under_the_table_of_connections(tmp_path) -> None:
    """README "Locking" rule 5: the server's table of connections is a leaf lock, nothing is taken
    under it; a new connection's session records itself under Kernel.lock after the table's lock
    is released (else a long render under Kernel.lock would hold up every connection's end)."""
    kernel = Kernel()
    path = str(tmp_path / "order.sock")
    server = DriverServer(kernel, path)
    table_held: list[bool] = []
    model_lock = kernel.lock

    class Recording:
        """Kernel.lock, noting whether the table's lock is held each time it is taken."""

        def __enter__(self) -> bool:
            table_held.append(server._lock.locked())
            return model_lock.__enter__()

        def __exit__(self, *exc: object) -> None:
            model_lock.__exit__(*exc)

    kernel.lock = Recording()
    server.start()
    try:
        with MemtrackClient(path) as c:  # one peer at a time: no other thread holds the table's lock
            c.call("root", name="r")
    finally:
        server.close()
        kernel.shutdown()
    assert table_held and not any(table_held), table_held


def test_an_event_handler_that_raises_does_not_stop_the_client(mount: Mount, capfd) -> None:
    """The client reads replies and events on one thread: a handler's exception (a driver's bug)
    is printed, and the replies of every later call still arrive."""
    raised = threading.Event()

    def broken(event: dict) -> None:
        raised.set()
        raise RuntimeError(f"handler bug on {event['event']}")

    with mount.client(on_event=broken) as c:
        node = c.call("root", name="n")["node"]
        c.call("watch", node=node)
        c.call("add", node=node, bytes=1)  # a notify event: the handler raises
        assert raised.wait(5)
        assert c.call("read", node=node, timeout=5)["bytes"] == 1
    assert "RuntimeError: handler bug on notify" in capfd.readouterr().err
