"""``memtrackfs run``: a command in a private namespace where the emulation sits at the real paths.

A run owns a work directory under the runtime directory: the mount point ``mnt``, the driver
socket, the daemons' logs, and ``proc``, where the proc union is mounted when the board adds
entries to /proc. It mounts memtrackfs (and the union), starts the vpu_sim daemon on it unless
told not to, runs the command through ``memtrackfs.sandbox.command``, and undoes every step in
reverse order however the run ends. The daemons run outside the namespace: they read the real
/proc.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any, NoReturn, Optional, Sequence

from memtrackfs import launch
from memtrackfs.mounts import (
    find_mount,
    is_memtrackfs,
    log_path_for_socket,
    runtime_dir,
)
from memtrackfs.sandbox import proc_union as proc_union_daemon
from memtrackfs.sandbox.command import SETUP_FAILED, WATCHED, RunError, run_in_namespace


class Workdir:
    def __init__(self, path: str) -> None:
        self.path = path
        self.mnt = os.path.join(path, "mnt")
        self.proc = os.path.join(path, "proc")  # the proc union's mount point
        self.socket = os.path.join(path, "driver.sock")
        self.mount_log = log_path_for_socket(self.socket)
        self.vpu_log = os.path.join(path, "vpu.log")  # the daemon's, or the scenario's
        self.proc_log = os.path.join(path, "proc.log")  # the proc union's

    @classmethod
    def create(cls) -> "Workdir":
        workdir = cls(tempfile.mkdtemp(prefix="run-", dir=runtime_dir()))
        os.mkdir(workdir.mnt)
        os.mkdir(workdir.proc)
        return workdir

    def remove(self) -> None:
        # File by file, never rmtree: a directory still mounted on must fail, not be descended into.
        for path in (self.socket, self.mount_log, self.vpu_log, self.proc_log):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for path in (self.mnt, self.proc, self.path):
            os.rmdir(path)


def _interrupt(signum: int, frame: Any) -> NoReturn:
    raise RunError(128 + signum, f"stopped by {signal.Signals(signum).name} before the command started")


def run(command: Sequence[str], board: Optional[str], bsp: Optional[str], vpu: bool, heap_options: Sequence[str],
        scenario: Optional[str] = None) -> int:
    """Set up, run ``command``, tear down; the command's exit status (see sandbox).

    ``board``: the mount's board profile and the vpu_sim driver's; None: the default (union)
    mount with the imx8qxp Amphion driver, or, with a scenario for rk3588, that board.
    With a ``scenario`` (a built-in scenario's name or a file), ``vpu-sim scenario`` plays it
    beside the command (it loads its own driver, with the scenario's board and faults, instead
    of the plain daemon); its summary is printed on stderr once the command is done. A command
    that ends while the scenario still plays stops it: that is said, and the status is
    SETUP_FAILED unless the command's own is an error.
    """
    # Until the command runs, SIGTERM and SIGHUP end the run as Ctrl-C does: through the teardown.
    # (Then run_in_namespace takes them over and passes them on to the command.)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    cleanup = contextlib.ExitStack()
    cut_short = False
    try:
        if board is None and scenario is not None:
            from vpu_sim.scenario.library import (
                mount_board as scenario_board,  # only a scenario needs vpu_sim
            )
            board = scenario_board(scenario)
        workdir = Workdir.create()
        cleanup.callback(workdir.remove)
        cleanup.callback(_unmount, workdir)
        _mount(workdir, board, bsp, heap_options)
        proc_union = None
        if os.listdir(os.path.join(workdir.mnt, "proc")):  # the board adds to /proc
            cleanup.callback(proc_union_daemon.stop, _start_proc_union(workdir), workdir.proc)
            proc_union = workdir.proc
        player = None
        if scenario is not None:
            # A file is named from here; a built-in scenario's name goes as it is.
            argument = os.path.abspath(scenario) if os.path.exists(scenario) else scenario
            player = _start_vpu(workdir, "scenario", argument)
            cleanup.callback(_print_log, workdir.vpu_log)
            cleanup.callback(launch.stop, player, signal.SIGINT)  # SIGINT: it stops its apps and driver, then sums up
        elif vpu:
            # It takes the board of the mount's greeting (the union mount: the i.MX8QXP's driver).
            cleanup.callback(launch.stop, _start_vpu(workdir, "daemon"))
        env = {**os.environ, "MEMTRACKFS_SOCKET": workdir.socket}
        status = run_in_namespace(command, env, workdir.mnt, proc_union)
        cut_short = player is not None and player.poll() is None
    finally:
        # A second Ctrl-C or SIGTERM must not leave a half torn-down run: they wait until exit.
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        cleanup.close()
    if cut_short:
        print("memtrackfs: run: COMMAND ended while the scenario was still playing: the scenario was stopped "
              "and its summary above covers only what had run; keep COMMAND running at least as long as the "
              "scenario (e.g. leakwatch.sh -d SECONDS, sleep SECONDS)", file=sys.stderr)
        return status or SETUP_FAILED
    return status


def _memtrackfs(*args: str) -> subprocess.CompletedProcess:
    # From /: `python -m` looks in the working directory first (a ./memtrackfs directory would
    # shadow the package), and a daemon's working directory keeps its mount busy.
    return subprocess.run([sys.executable, "-m", "memtrackfs", *args], capture_output=True, text=True, cwd="/")


def _mount(workdir: Workdir, board: Optional[str], bsp: Optional[str], heap_options: Sequence[str]) -> None:
    options = [*(["--board", board] if board else []), *(["--bsp", bsp] if bsp else [])]
    # As root, other users' processes in the namespace see the files too, as on a board.
    others = ["--allow-other"] if os.geteuid() == 0 else []
    done = _memtrackfs("mount", workdir.mnt, "--socket", workdir.socket, *others,
                       *options, *(f"--heap={heap}" for heap in heap_options))
    if done.returncode != 0:
        raise RunError(SETUP_FAILED, f"cannot mount memtrackfs: {done.stderr.strip()}{_log(workdir.mount_log)}")


def _unmount(workdir: Workdir) -> None:
    if not is_memtrackfs(find_mount(workdir.mnt)):
        return  # the mount failed or never started
    done = _memtrackfs("umount", workdir.mnt)
    if done.returncode != 0:
        raise RunError(SETUP_FAILED, f"cannot unmount {workdir.mnt}: {done.stderr.strip()}")


def _start_proc_union(workdir: Workdir) -> subprocess.Popen:
    try:
        # As root, other users' processes in the namespace see /proc too.
        return proc_union_daemon.start(workdir.proc, os.path.join(workdir.mnt, "proc"), workdir.proc_log,
                                       allow_other=os.geteuid() == 0)
    except RuntimeError as exc:
        raise RunError(SETUP_FAILED, f"{exc}{_log(workdir.proc_log)}") from None


def _start_vpu(workdir: Workdir, *vpu_sim_args: str) -> launch.DriverProcess:
    """``vpu-sim daemon``/``scenario`` on the run's mount, once it has said it is ready.

    Its own session: the terminal's Ctrl-C is for the command; the driver stays to the end."""
    try:
        return launch.start_vpu_sim([*vpu_sim_args, "--mount", workdir.mnt], workdir.vpu_log,
                                    env={**os.environ, "MEMTRACKFS_SOCKET": workdir.socket}, new_session=True)
    except launch.DriverStartError as exc:
        raise RunError(SETUP_FAILED, str(exc)) from None


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
