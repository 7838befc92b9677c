"""``memtrackfs run``: a command in a private namespace where the emulation sits at the real paths.

A run owns a work directory under the runtime directory: the mount point ``mnt``, the driver
socket, the daemons' logs, and ``proc``, where the namespace binds the real procfs for the /proc
union. It mounts memtrackfs there (with the union), starts the vpu_sim daemon on it unless told
not to, runs the command through ``memtrackfs.sandbox.command``, and undoes every step in reverse order
however the run ends. The daemons run outside the namespace: they read the real /proc.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, NoReturn, Optional, Sequence

from memtrackfs.mounts import find_mount, is_memtrackfs, runtime_dir
from memtrackfs.sandbox.command import SETUP_FAILED, WATCHED, RunError, run_in_namespace

VPU_START_TIMEOUT = 20.0  # seconds for the vpu_sim daemon to register its nodes
VPU_STOP_TIMEOUT = 10.0


class Workdir:
    def __init__(self, path: str) -> None:
        self.path = path
        self.mnt = os.path.join(path, "mnt")
        self.real_proc = os.path.join(path, "proc")
        self.socket = os.path.join(path, "driver.sock")
        self.mount_log = os.path.join(path, "driver.log")  # `memtrackfs mount` puts it beside the socket
        self.vpu_log = os.path.join(path, "vpu.log")  # the daemon's, or the scenario's

    @classmethod
    def create(cls) -> "Workdir":
        os.makedirs(runtime_dir(), mode=0o700, exist_ok=True)
        workdir = cls(tempfile.mkdtemp(prefix="run-", dir=runtime_dir()))
        os.mkdir(workdir.mnt)
        os.mkdir(workdir.real_proc)
        return workdir

    def remove(self) -> None:
        # File by file, never rmtree: a directory still mounted on must fail, not be descended into.
        for path in (self.socket, self.mount_log, self.vpu_log):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for path in (self.mnt, self.real_proc, self.path):
            os.rmdir(path)


def _interrupt(signum: int, frame: Any) -> NoReturn:
    raise RunError(128 + signum, f"stopped by {signal.Signals(signum).name} before the command started")


def run(command: Sequence[str], board: Optional[str], bsp: Optional[str], vpu: bool, heap_options: Sequence[str],
        scenario: Optional[str] = None) -> int:
    """Set up, run ``command``, tear down; the command's exit status (see sandbox).

    ``board``: the mount's board profile and the vpu_sim driver's; None: the default (union)
    mount with the imx8qxp Amphion driver, or, with a scenario for rk3588, that board.
    With a ``scenario``, ``vpu-sim scenario`` plays it beside the command (it loads its own
    driver, with the scenario's board and faults, instead of the plain daemon); its summary is
    printed on stderr once the command is done.
    """
    # Until the command runs, SIGTERM and SIGHUP end the run as Ctrl-C does: through the teardown.
    # (Then run_in_namespace takes them over and passes them on to the command.)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    cleanup = contextlib.ExitStack()
    try:
        mount_board = board if board is not None else _scenario_board(scenario)
        workdir = Workdir.create()
        cleanup.callback(workdir.remove)
        cleanup.callback(_unmount, workdir)
        _mount(workdir, mount_board, bsp, heap_options)
        driver_board = _driver_board(mount_board)
        if scenario is not None:
            player = _start_vpu(workdir, "scenario", os.path.abspath(scenario))
            cleanup.callback(_print_log, workdir.vpu_log)
            cleanup.callback(_stop, player, signal.SIGINT)  # SIGINT: it stops its apps and driver, then sums up
            _wait_for_nodes(workdir, player, driver_board)
        elif vpu:
            daemon = _start_vpu(workdir, "daemon", "--board", driver_board)
            cleanup.callback(_stop, daemon, signal.SIGTERM)
            _wait_for_nodes(workdir, daemon, driver_board)
        env = {**os.environ, "MEMTRACKFS_SOCKET": workdir.socket}
        return run_in_namespace(command, env, workdir.mnt, workdir.real_proc)
    finally:
        # A second Ctrl-C or SIGTERM must not leave a half torn-down run: they wait until exit.
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        cleanup.close()


# The daemons run from /: `python -m` looks in the working directory first (a ./memtrackfs
# directory would shadow the package), and a daemon's working directory keeps its mount busy.
_DAEMON_CWD = "/"


def _memtrackfs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memtrackfs", *args], capture_output=True, text=True,
                          cwd=_DAEMON_CWD)


def _scenario_board(scenario: Optional[str]) -> Optional[str]:
    """A scenario for the RK3588 needs that board's mount; the Amphion ones run on the default."""
    if scenario is None:
        return None
    from vpu_sim.scenario.spec import load  # only a run with a scenario needs vpu_sim
    try:
        board = load(scenario).board
    except ValueError:
        return None  # `vpu-sim scenario` reports the bad file itself
    return board if board == "rk3588" else None


def _driver_board(mount_board: Optional[str]) -> str:
    """The vpu_sim driver of a mount's board: the default (union) mount gets the i.MX8QXP."""
    return "imx8qxp" if mount_board in (None, "union") else mount_board


def _mount(workdir: Workdir, board: Optional[str], bsp: Optional[str], heap_options: Sequence[str]) -> None:
    options = [*(["--board", board] if board else []), *(["--bsp", bsp] if bsp else [])]
    done = _memtrackfs("mount", workdir.mnt, "--socket", workdir.socket, "--proc-union", workdir.real_proc,
                       *options, *(f"--heap={heap}" for heap in heap_options))
    if done.returncode != 0:
        raise RunError(SETUP_FAILED, f"cannot mount memtrackfs: {done.stderr.strip()}{_log(workdir.mount_log)}")


def _unmount(workdir: Workdir) -> None:
    if not is_memtrackfs(find_mount(workdir.mnt)):
        return  # the mount failed or never started
    done = _memtrackfs("umount", workdir.mnt)
    if done.returncode != 0:
        raise RunError(SETUP_FAILED, f"cannot unmount {workdir.mnt}: {done.stderr.strip()}")


def _start_vpu(workdir: Workdir, *vpu_sim_args: str) -> subprocess.Popen:
    with open(workdir.vpu_log, "wb") as log:
        # Its own session: the terminal's Ctrl-C is for the command; the driver stays to the end.
        return subprocess.Popen([sys.executable, "-m", "vpu_sim", *vpu_sim_args, "--mount", workdir.mnt],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "MEMTRACKFS_SOCKET": workdir.socket}, cwd=_DAEMON_CWD,
                                start_new_session=True)


def _wait_for_nodes(workdir: Workdir, daemon: subprocess.Popen, board: str) -> None:
    from vpu_sim.boards import node_names  # only a run with the VPU needs vpu_sim

    nodes = [os.path.join(workdir.mnt, "dev", name) for name in node_names(board)]
    deadline = time.monotonic() + VPU_START_TIMEOUT
    while not all(os.path.exists(node) for node in nodes):
        if daemon.poll() is not None:
            raise RunError(SETUP_FAILED, f"the vpu_sim daemon exited with status {daemon.returncode}"
                                         f"{_log(workdir.vpu_log)}")
        if time.monotonic() > deadline:
            raise RunError(SETUP_FAILED, f"the vpu_sim daemon did not register its nodes in "
                                         f"{VPU_START_TIMEOUT:.0f} s{_log(workdir.vpu_log)}")
        time.sleep(0.02)


def _stop(daemon: subprocess.Popen, how: signal.Signals) -> None:
    if daemon.poll() is None:
        daemon.send_signal(how)
    try:
        daemon.wait(VPU_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def _print_log(path: str) -> None:
    text = _log(path)
    if text:
        print(text.lstrip("\n"), file=sys.stderr)


def _log(path: str) -> str:
    """A daemon's log, for an error message: the file goes with the work directory."""
    try:
        with open(path, errors="replace") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return ""
    return f"\n--- {os.path.basename(path)} ---\n{text}" if text else ""
