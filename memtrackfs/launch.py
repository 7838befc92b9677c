"""Starting a driver process beside a mount and waiting until it serves its nodes.

``vpu-sim daemon`` prints ``READY`` (``vpu-sim: ready: ...``) on stdout once its device nodes
are registered, and ``vpu-sim scenario`` once its own driver's are. Every starter (``memtrackfs
run``, the pytest plugin, ``vpu-sim scenario`` for its driver, ``scripts/demo.sh`` in sh) sends
the process's output to a log file and waits for that line there, within a bound; a process that
exits first, or never says it, is an error that names the log and shows its end.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Mapping, Optional, Sequence

READY = "vpu-sim: ready:"
START_TIMEOUT = 20.0   # seconds for a driver to register its nodes (a loaded CI machine is slow)
_LOG_TAIL = 20         # lines of the log an error shows


class DriverStartError(RuntimeError):
    """The driver exited, or did not become ready in time; the message names its log."""


class DriverProcess(subprocess.Popen):
    """A started ``vpu-sim`` process whose stdout and stderr go to ``log_path``."""

    log_path: str

    def output(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


def is_ready_line(line: str) -> bool:
    return line.startswith(READY)


def start_vpu_sim(args: Sequence[str], log_path: str, *, env: Optional[Mapping[str, str]] = None,
                  new_session: bool = False, timeout: float = START_TIMEOUT) -> DriverProcess:
    """Run ``python -m vpu_sim ARGS`` (``daemon ...`` or ``scenario ...``), its output in ``log_path``;
    return once it has printed its readiness line. DriverStartError otherwise (the process is
    stopped first)."""
    with open(log_path, "wb") as log:
        # From /: `python -m` looks in the working directory first (a ./vpu_sim or ./memtrackfs
        # directory would shadow the package), and a daemon's working directory keeps a mount busy.
        proc = DriverProcess([sys.executable, "-m", "vpu_sim", *args], stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, env=None if env is None else dict(env), cwd="/",
                             start_new_session=new_session)
    proc.log_path = log_path
    try:
        wait_until_ready(proc, f"vpu-sim {args[0]}", timeout)
    except BaseException:
        stop(proc)
        raise
    return proc


def wait_until_ready(proc: DriverProcess, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        text = proc.output()
        if any(is_ready_line(line) for line in text.splitlines()):
            return
        if proc.poll() is not None:
            raise DriverStartError(f"{what} exited with status {proc.returncode} before it was ready "
                                   f"(its log: {proc.log_path}){_tail(text)}")
        if time.monotonic() > deadline:
            raise DriverStartError(f"{what} did not say it was ready within {timeout:g} s "
                                   f"(its log: {proc.log_path}){_tail(text)}")
        time.sleep(0.02)


def _tail(text: str) -> str:
    lines = text.strip().splitlines()[-_LOG_TAIL:]
    return (":\n" + "\n".join(lines)) if lines else ": (empty)"


def stop(proc: subprocess.Popen, signal_number: int = signal.SIGTERM, timeout: float = 10.0) -> Optional[int]:
    """Send ``signal_number`` (SIGTERM by default) unless it has exited; SIGKILL after ``timeout``."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal_number)
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
