"""The /proc of ``memtrackfs run``: procfs as it is, plus the board's entries.

procfs cannot gain names (no mount point can be made in it, and overlayfs refuses it as a
layer), so /proc is a FUSE directory of its own whose entries lead into the real procfs. This
daemon serves it, from outside the run's namespace (it reads the real /proc); the namespace
completes it with mounts (``memtrackfs.sandbox.realpaths``):

| name in the union                  | what it is here            | what covers it in the namespace        |
|------------------------------------|----------------------------|----------------------------------------|
| ``.real`` (not listed)             | an empty directory         | the real procfs                        |
| ``self``, ``thread-self``          | placeholder links          | procfs's own links, mounted themselves |
| other procfs names (sys, meminfo)  | placeholders of their kind | a bind of the procfs entry             |
| procfs links (mounts, net)         | the same link              | -                                      |
| the board's (rk_dmabuf, ...)       | placeholders of their kind | a bind of the memtrackfs mount's entry |
| ``<pid>``, its ``task/<tid>``      | directories (htop opens them with O_NOFOLLOW) | -                   |
| ``<pid>/<name>``                   | a link to ``/proc/.real/<pid>/<name>`` | -                          |
| ``<pid>/exe``, ``cwd``, ``root``   | a copy of procfs's link text (``readlink`` shows the program, as Go's os.Executable needs) | - |

Why it is fast enough (README "memtrackfs run", scripts/bench.py): the kernel keeps the
answers: entries and attributes for ENTRY_TIMEOUT, and, on libfuse3, every link's target in the
page cache (FUSE_CAP_CACHE_SYMLINKS), so a ``ps`` reads procfs at nearly procfs's speed. What
the caches would keep wrong, ``Reaper`` takes back: a dead process's directory, a changed owner,
the copied exe/cwd/root links. libfuse2 (fusepy 3.0.1, or no libfuse3 installed) cannot cache
links: the union works the same, every path through a link costs one READLINK more.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from typing import Any, Callable, NamedTuple, Optional

from memtrackfs import launch
from memtrackfs.errors import KernelError
from memtrackfs.mounts import find_mount, run_unmount

REAL = ".real"  # where the namespace mounts the real procfs
_PROC = "/proc"  # this daemon runs outside the namespace: its /proc is the real procfs
ENTRY_TIMEOUT = 10.0  # seconds the kernel keeps an entry and its attributes (the reaper corrects it)
NEGATIVE_TIMEOUT = 10.0  # and that a name does not exist (ps probes /proc/PID/ctty, which procfs lacks)
REAP_INTERVAL = 0.1   # seconds between two checks of what the kernel may have kept wrong
START_TIMEOUT = 20.0  # seconds for the daemon to have its mount usable
STOP_TIMEOUT = 10.0
_COPIED_LINKS = frozenset({"exe", "cwd", "root"})
_ROOT_ID = 1  # FUSE_ROOT_ID: the node of the mount's root directory
_FUSE_CAP_READDIRPLUS, _FUSE_CAP_READDIRPLUS_AUTO, _FUSE_CAP_CACHE_SYMLINKS = 1 << 13, 1 << 14, 1 << 23
_LINK = stat.S_IFLNK | 0o777
_DIR = stat.S_IFDIR | 0o555


def load_fuse() -> Any:
    """The binding, on libfuse3 when it is installed (it can cache links) unless MEMTRACKFS_FUSE
    asks for fusepy (libfuse2 only). Must run before anything imports the binding."""
    if os.environ.get("MEMTRACKFS_FUSE", "") != "fusepy" and "FUSE_LIBRARY_PATH" not in os.environ:
        libfuse3 = ctypes.util.find_library("fuse3")
        if libfuse3:
            os.environ["FUSE_LIBRARY_PATH"] = libfuse3
    from memtrackfs.fs.fuselib import load_fuse_module
    return load_fuse_module()


class Node(NamedTuple):
    mode: int                     # file type and permissions
    source: Optional[str]         # the real procfs path whose attributes (and listing) it has
    target: Optional[str] = None  # a link's text; None for a copied link: read from procfs


def _no_such(path: str) -> OSError:
    return FileNotFoundError(errno.ENOENT, "no such entry in procfs", path)


class ProcUnion:
    """The namespace of names: what each path of the union is. Pure reads of the real /proc."""

    def __init__(self, own_dir: str) -> None:
        # The board's entries, as the memtrackfs mount has them (the one list: fs.tree.proc_entries);
        # a placeholder has the kind and permissions of the entry it stands for.
        self.own = {name: os.lstat(os.path.join(own_dir, name)).st_mode for name in sorted(os.listdir(own_dir))}
        self.static: dict[str, Node] = {}
        for name in os.listdir(_PROC):
            if name.isdigit() or name in self.own:
                continue
            real = f"{_PROC}/{name}"
            try:
                mode = os.lstat(real).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(mode):
                # self and thread-self depend on the reader: the namespace covers these with
                # procfs's own links; the text here is right for every reader, should one see it.
                target = f"{_PROC}/{REAL}/{name}" if name in ("self", "thread-self") else os.readlink(real)
                self.static[name] = Node(_LINK, None, target)
            else:
                self.static[name] = Node(mode, None)
        # Every process directory has the same names (procfs's tgid_base_stuff / tid_base_stuff).
        me = os.getpid()
        self.pid_names = frozenset(os.listdir(f"{_PROC}/{me}"))
        self.tid_names = frozenset(os.listdir(f"{_PROC}/{me}/task/{me}"))

    def node(self, path: str) -> Node:
        """What ``path`` (``/`` or ``/name/...``) is; FileNotFoundError if procfs has no such name."""
        if path == "/":
            return Node(_DIR, _PROC)
        parts = path[1:].split("/")
        first = parts[0]
        if not first.isdigit():
            if len(parts) == 1:
                if first in self.own:
                    return Node(self.own[first], None)
                if first in self.static:
                    return self.static[first]
                if first == REAL:
                    return Node(_DIR, None)
            raise _no_such(path)
        return self._process_node(parts)

    def _process_node(self, parts: list[str]) -> Node:
        pid = parts[0]
        if len(parts) == 1:
            return Node(_DIR, f"{_PROC}/{pid}")
        if len(parts) == 2:
            return self._entry(pid, parts[1], self.pid_names, task_dir=True)
        if parts[1] == "task" and parts[2].isdigit():
            tid = f"{pid}/task/{parts[2]}"
            if len(parts) == 3:
                return Node(_DIR, f"{_PROC}/{tid}")
            if len(parts) == 4:
                return self._entry(tid, parts[3], self.tid_names, task_dir=False)
        raise _no_such("/".join(parts))

    def _entry(self, directory: str, name: str, names: frozenset[str], task_dir: bool) -> Node:
        if name not in names:
            raise _no_such(name)
        if task_dir and name == "task":
            return Node(_DIR, f"{_PROC}/{directory}/task")
        if name in _COPIED_LINKS:
            return Node(_LINK, f"{_PROC}/{directory}")
        return Node(_LINK, f"{_PROC}/{directory}", f"{_PROC}/{REAL}/{directory}/{name}")

    @staticmethod
    def copied_link(path: str) -> str:
        """The text procfs has for the exe, cwd or root link at ``path``."""
        return os.readlink(_PROC + path)

    def listing(self, path: str) -> list[tuple[str, int]]:
        """(name, file type) of each entry of directory ``path``."""
        node = self.node(path)
        if path == "/":
            names = os.listdir(_PROC)
            entries = [(name, stat.S_IFMT(mode.mode)) for name, mode in self.static.items()]
            entries += [(name, stat.S_IFMT(mode)) for name, mode in self.own.items()]
            return entries + [(name, stat.S_IFDIR) for name in names if name.isdigit()]
        if node.source is None or not stat.S_ISDIR(node.mode):
            return []
        names = os.listdir(node.source)
        if path.endswith("/task"):
            return [(name, stat.S_IFDIR) for name in names]
        return [(name, stat.S_IFDIR if name == "task" and path.count("/") == 1 else stat.S_IFLNK)
                for name in names]


def make_operations(fuse: Any) -> type:
    """The FUSE operations class, on the loaded binding (mfusepy or fusepy 3.0.1)."""
    from memtrackfs.fs.fuselib import keeping_thread_state

    is_libfuse3 = getattr(fuse, "fuse_version_major", 2) == 3

    class Operations(fuse.Operations):
        use_ns = True

        def __init__(self, union: ProcUnion, on_ready: Callable[[], None]) -> None:
            self.union = union
            self.reaper = Reaper(fuse._libfuse, is_libfuse3)
            self._on_ready = on_ready
            self._boot_ns = time.time_ns()

        def init_with_config(self, conn: Any, config: Any) -> None:  # mfusepy
            if is_libfuse3 and conn is not None:
                # Links cached by the kernel; no READDIRPLUS (it stats every entry of each listing).
                conn.want = (conn.want | _FUSE_CAP_CACHE_SYMLINKS) & ~(
                    _FUSE_CAP_READDIRPLUS | _FUSE_CAP_READDIRPLUS_AUTO)
            self.init("/")

        def init(self, path: str) -> None:  # fusepy, and mfusepy through init_with_config
            self.reaper.start()
            self._on_ready()

        def _node(self, path: str) -> Node:
            try:
                return self.union.node(path)
            except OSError as exc:
                raise fuse.FuseOSError(exc.errno) from None

        def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
            node = self._node(path)
            attrs = {"st_mode": node.mode, "st_nlink": 2 if stat.S_ISDIR(node.mode) else 1, "st_size": 0,
                     "st_uid": 0, "st_gid": 0,
                     "st_atime": self._boot_ns, "st_mtime": self._boot_ns, "st_ctime": self._boot_ns}
            if node.source is not None:
                try:
                    real = os.stat(node.source)
                except OSError as exc:
                    self.reaper.absent(path)
                    raise fuse.FuseOSError(exc.errno) from None
                attrs.update(st_uid=real.st_uid, st_gid=real.st_gid, st_atime=real.st_atime_ns,
                             st_mtime=real.st_mtime_ns, st_ctime=real.st_ctime_ns)
                if stat.S_ISDIR(node.mode):
                    attrs.update(st_mode=real.st_mode, st_nlink=real.st_nlink)
                self.reaper.watch(path, real)
            return attrs

        def readlink(self, path: str) -> str:
            node = self._node(path)
            if not stat.S_ISLNK(node.mode):
                raise fuse.FuseOSError(errno.EINVAL)
            if node.target is not None:
                return node.target
            try:
                self._check_may_read(node)
                target = self.union.copied_link(path)
            except OSError as exc:
                raise fuse.FuseOSError(exc.errno) from None
            self.reaper.copied(path, target)
            return target

        @staticmethod
        def _check_may_read(node: Node) -> None:
            """exe, cwd and root are readable by the process's owner and root only (procfs asks
            ptrace_may_access; the owner of /proc/PID is the process's euid, root if not dumpable)."""
            uid = fuse.fuse_get_context()[0]
            if uid != 0 and node.source is not None and os.stat(node.source).st_uid != uid:
                raise PermissionError(errno.EACCES, "not the process's owner")

        def readdir(self, path: str, fh: Any) -> list[Any]:
            try:
                entries = self.union.listing(path)
            except OSError as exc:
                raise fuse.FuseOSError(exc.errno) from None
            return [(".", {"st_mode": stat.S_IFDIR}, 0), ("..", {"st_mode": stat.S_IFDIR}, 0),
                    *((name, {"st_mode": kind}, 0) for name, kind in entries)]

    for name, method in list(vars(Operations).items()):
        if not name.startswith("_") and name not in ("init", "init_with_config") and callable(method):
            setattr(Operations, name, keeping_thread_state(method))
    return Operations


class Reaper:
    """Takes back, every REAP_INTERVAL, what the kernel keeps and procfs has since changed.

    | what the kernel keeps                         | taken back when                          |
    |-----------------------------------------------|------------------------------------------|
    | a process's directory (ENTRY_TIMEOUT)         | the process has exited (as on procfs)    |
    | its attributes                                | its owner changed (setuid, setgid)       |
    | a copied exe/cwd/root link (libfuse3)         | procfs's text changed (exec, chdir)      |
    | "no such process" for a pid or tid probed     | it exists                                |
    |   before it existed (NEGATIVE_TIMEOUT)        |                                          |

    So what a caller sees is at most REAP_INTERVAL late, in the cases a cache could be wrong.
    """

    def __init__(self, libfuse: Any, is_libfuse3: bool) -> None:
        self._libfuse = libfuse
        self._is_libfuse3 = is_libfuse3
        self._lock = threading.Lock()
        self._owners: dict[str, tuple[int, int]] = {}  # "/PID" -> (uid, gid) it was given with
        self._copied: dict[str, str] = {}              # "/PID/exe" -> the text given
        self._absent: dict[str, float] = {}            # "/PID", "/PID/task/TID" -> when found absent
        self._notify_inval_entry = self._function("fuse_lowlevel_notify_inval_entry")
        self._invalidate_path = self._function("fuse_invalidate_path") if is_libfuse3 else None

    def start(self) -> None:
        """Start reaping; called from init, a FUSE callback (where the fuse_context is valid)."""
        # struct fuse_context starts with `struct fuse *fuse` in libfuse 2 and 3.
        fuse = ctypes.c_void_p(self._function("fuse_get_context", ctypes.POINTER(ctypes.c_void_p))()[0])
        threading.Thread(target=self._run, args=(fuse,), name="proc-union-reaper", daemon=True).start()

    def watch(self, path: str, real: os.stat_result) -> None:
        if path.count("/") == 1 and path != "/":
            with self._lock:
                self._owners[path] = (real.st_uid, real.st_gid)

    def copied(self, path: str, target: str) -> None:
        if self._is_libfuse3:  # libfuse2 caches no link: each readlink is asked again
            with self._lock:
                self._copied[path] = target

    def absent(self, path: str) -> None:
        """A process or thread looked up before it existed (its name is all digits)."""
        if path.rsplit("/", 1)[1].isdigit() and path.count("/") in (1, 3):
            with self._lock:
                self._absent[path] = time.monotonic()

    def _run(self, fuse: ctypes.c_void_p) -> None:
        session = self._session(fuse)
        while True:
            time.sleep(REAP_INTERVAL)
            with self._lock:
                owners, copied = dict(self._owners), dict(self._copied)
                absent = dict(self._absent)
            gone = {path for path, owner in owners.items() if _owner(path) != owner}
            # A pid's entry taken back takes everything under it: forget what was kept there.
            stale = [path for path, text in copied.items() if _first(path) in gone or _readlink(path) != text]
            now = time.monotonic()
            born = [path for path in absent if os.path.lexists(_PROC + path)]
            forgotten = [path for path, when in absent.items() if now - when > NEGATIVE_TIMEOUT]
            with self._lock:
                for path in gone:
                    self._owners.pop(path, None)
                for path in stale:
                    self._copied.pop(path, None)
                for path in born + forgotten:  # the kernel has forgotten these by now
                    self._absent.pop(path, None)
            for pid in gone | {_first(path) for path in born}:
                self._inval_entry(session, pid[1:].encode())
            for path in stale:
                if _first(path) not in gone:
                    self._invalidate_path(fuse, path.encode())

    def _function(self, name: str, restype: Any = ctypes.c_int) -> Any:
        """A libfuse function of our own (``lib[name]`` is a new object, unlike ``lib.name``,
        whose restype the binding has set for itself)."""
        function = self._libfuse[name]
        function.restype = restype
        return function

    def _session(self, fuse: ctypes.c_void_p) -> ctypes.c_void_p:
        session = self._function("fuse_get_session", ctypes.c_void_p)(fuse)
        if self._is_libfuse3:
            return ctypes.c_void_p(session)
        # libfuse2 notifies through the session's channel.
        return ctypes.c_void_p(self._function("fuse_session_next_chan", ctypes.c_void_p)(ctypes.c_void_p(session), None))

    def _inval_entry(self, session: ctypes.c_void_p, name: bytes) -> None:
        """Drop the root's entry ``name`` and everything under it from the kernel's caches (the
        high-level API names no other directory's node; the answer does not matter: ENOENT means
        the kernel had already dropped it)."""
        self._notify_inval_entry(session, ctypes.c_uint64(_ROOT_ID), name, ctypes.c_size_t(len(name)))


def _first(path: str) -> str:
    """``/PID`` of ``/PID/...``."""
    return "/" + path.split("/", 2)[1]


def _owner(path: str) -> Optional[tuple[int, int]]:
    try:
        real = os.stat(_PROC + path)
    except OSError:
        return None
    return real.st_uid, real.st_gid


def _readlink(path: str) -> Optional[str]:
    try:
        return os.readlink(_PROC + path)
    except OSError:
        return None


def serve(mountpoint: str, own_dir: str, allow_other: bool, on_ready: Callable[[], None]) -> None:
    fuse = load_fuse()
    union = ProcUnion(own_dir)
    operations = make_operations(fuse)(union, on_ready)
    options: dict[str, Any] = {"allow_other": True} if allow_other else {}
    if getattr(fuse, "fuse_version_major", 2) == 3:
        # libfuse 3.14 warns about its own default (-1) unless it is given a value.
        options["max_idle_threads"] = 10
    # ro: the kernel then stops re-asking a directory's attributes after each listing (atime);
    # whatever is writable is a bind mount or a link into procfs or memtrackfs.
    fuse.FUSE(operations, mountpoint, foreground=True, ro=True, fsname="memtrackfs-proc",
              subtype="memtrackfs-proc", entry_timeout=ENTRY_TIMEOUT, attr_timeout=ENTRY_TIMEOUT,
              negative_timeout=NEGATIVE_TIMEOUT, **options)


def start(mountpoint: str, own_dir: str, log_path: str, allow_other: bool = False) -> subprocess.Popen:
    """The daemon, serving at ``mountpoint`` the board's entries found in ``own_dir`` (the
    memtrackfs mount's proc/), once its mount is usable; its stderr goes to ``log_path``.
    RuntimeError if it does not say ``ready`` within START_TIMEOUT."""
    with open(log_path, "wb") as log:
        # From /: a daemon's working directory keeps its mount busy. Its own session: the
        # terminal's Ctrl-C is for the command.
        daemon = subprocess.Popen([sys.executable, "-m", __name__, mountpoint, own_dir,
                                   *(["--allow-other"] if allow_other else [])], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=log, cwd="/", start_new_session=True)
    assert daemon.stdout is not None
    with daemon.stdout:
        ready = select.select([daemon.stdout], [], [], START_TIMEOUT)[0] and daemon.stdout.readline()
    if ready != b"ready\n":
        stop(daemon, mountpoint)
        raise RuntimeError(f"the /proc union did not start (its log: {log_path})")
    return daemon


def stop(daemon: subprocess.Popen, mountpoint: str) -> None:
    """libfuse unmounts on SIGTERM; a daemon that does not end is killed and its mount detached."""
    launch.stop(daemon, timeout=STOP_TIMEOUT)
    if find_mount(mountpoint) is not None:
        # Best effort (the teardown goes on): it fails only if the mount went meanwhile.
        with contextlib.suppress(KernelError):
            run_unmount(mountpoint, lazy=True)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m memtrackfs.sandbox.proc_union MOUNTPOINT OWN_DIR [--allow-other]``: serve until
    unmounted or signalled (SIGTERM, or the death of the process that started it); prints
    ``ready`` on stdout once the mount is usable."""
    args = list(sys.argv[1:] if argv is None else argv)
    allow_other = "--allow-other" in args
    mountpoint, own_dir = [arg for arg in args if arg != "--allow-other"]
    _die_with_parent()
    serve(mountpoint, own_dir, allow_other, lambda: print("ready", flush=True))
    return 0


def _die_with_parent() -> None:
    """If `memtrackfs run` is killed, this daemon unmounts and ends too (libfuse's SIGTERM handler)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:
        sys.exit("memtrackfs-proc: the process that started it is gone")


if __name__ == "__main__":
    sys.exit(main())
