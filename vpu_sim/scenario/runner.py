"""``vpu-sim scenario FILE``: load the scenario's driver, play its timeline, report.

1. Refuse if a driver already serves the board's node (``MNT/dev/video0``, or
   ``MNT/dev/mpp_service`` on rk3588): the scenario loads its own, with its board and driver faults.
2. Start ``vpu-sim daemon`` with them and wait for its readiness line (``memtrackfs.launch``),
   then print the scenario's own; idle ``settle`` seconds and read the totals (before).
3. The timeline: each application starts at its ``start`` as a process of its own
   (``python -m vpu_sim play ... --json``, whose JSON lines feed the live view), a ``crash``
   SIGKILLs its application, ``cma-exhaustion`` fills the CMA heap and later frees it.
4. When every application has exited and every event has passed: idle ``settle`` seconds, read
   the totals (after), stop the daemon (SIGTERM: the driver is removed), print the summary.

SIGINT (Ctrl-C, or ``memtrackfs run`` when its command ends first) cuts the timeline short: the
applications and the driver are stopped and the summary says when the scenario was interrupted.

A helper a ``keep-dmabufs`` application handed its buffers to is the leak itself: it outlives
the scenario (for the fault's ``hold`` seconds, or until the mount goes away).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, TextIO

from memtrackfs import launch, paths
from memtrackfs.mounts import runtime_dir
from memtrackfs.tools.parse import parse_first_number, parse_memtrack
from vpu_sim.apps.hog import CmaHog
from vpu_sim.boards import driver_of, node_names
from vpu_sim.driver.amphion import model as amphion
from vpu_sim.driver.remote import socket_path
from vpu_sim.scenario.library import resolve
from vpu_sim.scenario.spec import App, Scenario, load
from vpu_sim.scenario.view import LiveView, Stream, Totals, exit_text, summary

TICK = 0.1                 # how often the timeline looks at its processes and redraws


class ScenarioError(OSError):
    """The scenario could not run (as opposed to its applications failing, which it reports)."""


def _read(path: str, parse: Callable[[str], int]) -> Optional[int]:
    """The file's figure; None if there is no such file or it does not read as one."""
    try:
        with open(path, encoding="utf-8") as f:
            return parse(f.read())
    except (FileNotFoundError, ValueError):
        return None


def read_totals(mount: str) -> Totals:
    """The Amphion tree's total (None where there is none, as on an RK3588) and rk_dmabuf/size."""
    return Totals(_read(os.path.join(mount, paths.MEMTRACK_DIR, amphion.TRACKER_ROOT),
                        lambda text: parse_memtrack(text)[0]),
                  _read(os.path.join(mount, paths.RK_DMABUF_SIZE), parse_first_number))


class AppRun:
    """One application process of the timeline and what it reported."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.name = app.name
        self.what = app.what
        self.streams: dict[str, Stream] = {}
        self.notes: list[dict[str, object]] = []
        self.error = ""
        self.crashed = False
        self.stopped = False   # killed because the scenario was cut short
        self.proc: Optional[subprocess.Popen[str]] = None
        self._readers: list[threading.Thread] = []
        self.finished = False  # exited, and its reports read

    def start(self, mount: str, env: dict[str, str]) -> str:
        self.proc = subprocess.Popen(self.app.command(mount), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self._readers = [threading.Thread(target=self._read_reports, daemon=True),
                         threading.Thread(target=self._read_errors, daemon=True)]
        for reader in self._readers:
            reader.start()
        return f"{self.name}: started {self.what} for {self.app.seconds:g} s (pid {self.proc.pid})"

    def _read_reports(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                continue  # not a report (the application prints only JSON lines with --json)
            if "event" in report:
                self.notes.append(report)
            else:
                self.streams[report["label"]] = Stream(report["frames"], report["fps"], report["usage"], report["peak"])

    def _read_errors(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.strip():
                self.error = line.strip()

    @property
    def state(self) -> str:
        if self.proc is None:
            return "waiting"
        return "running" if self.proc.poll() is None else "exited"

    @property
    def status(self) -> str:
        if self.proc is None:
            return "not started"
        if self.proc.returncode is None:
            return self.state
        if self.stopped:
            return "stopped: the scenario was cut short"
        return exit_text(self.proc.returncode, self.error, self.crashed)

    def newly_exited(self) -> bool:
        """True once, when the process has exited and everything it wrote has been read."""
        if self.finished or self.state != "exited":
            return False
        for reader in self._readers:
            reader.join()
        self.finished = True
        return True

    def crash(self) -> str:
        if self.state != "running":
            return f"{self.name}: crash: not running ({self.state}), nothing to kill"
        assert self.proc is not None
        self.crashed = True
        self.proc.send_signal(signal.SIGKILL)
        return f"{self.name}: crash: SIGKILL"

    def kill(self) -> None:
        if self.state == "running":
            assert self.proc is not None
            self.stopped = True
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True)
class Event:
    at: float
    action: Callable[[], str]   # does it; returns what the view shows


class ScenarioRun:
    def __init__(self, scenario: Scenario, mount: str, socket: str, out: TextIO) -> None:
        self.scenario = scenario
        self.mount = mount
        self.dev_dir = os.path.join(mount, "dev")
        # Children find the socket the same way, whatever the mount table says.
        self.env = {**os.environ, "MEMTRACKFS_SOCKET": socket}
        self.socket = socket
        self.out = out
        self.apps = [AppRun(app) for app in scenario.apps]
        self.hog: Optional[CmaHog] = None
        self.daemon: Optional[launch.DriverProcess] = None

    def _start_daemon(self) -> None:
        node = os.path.join(self.dev_dir, node_names(self.scenario.board)[0])
        if os.path.exists(node):
            raise ScenarioError(f"a VPU driver already serves {node} (is vpu-sim daemon running?); a scenario "
                                "loads its own driver, with its board and faults: stop that one first")
        os.makedirs(runtime_dir(), mode=0o700, exist_ok=True)
        fd, log = tempfile.mkstemp(prefix="scenario-driver-", suffix=".log", dir=runtime_dir())
        os.close(fd)
        try:
            self.daemon = launch.start_vpu_sim(["daemon", "--mount", self.mount, *self.scenario.daemon_args()],
                                               log, env=self.env)
        except launch.DriverStartError as exc:
            raise ScenarioError(f"the scenario's driver did not start: {exc}") from None
        ready = [line for line in self.daemon.output().splitlines() if launch.is_ready_line(line)]
        self.out.write(f"{ready[0]} (scenario {self.scenario.name})\n")
        self.out.flush()

    def _stop_daemon(self) -> None:
        if self.daemon is None:
            return
        launch.stop(self.daemon)
        if self.daemon.returncode == 0:
            os.unlink(self.daemon.log_path)  # kept when the driver failed: an error may name it

    def _events(self) -> list[Event]:
        events = []
        for app in self.apps:
            events.append(Event(app.app.start, lambda app=app: app.start(self.mount, self.env)))
            if app.app.crash_at is not None:
                events.append(Event(app.app.crash_at, app.crash))
        exhaustion = self.scenario.cma_exhaustion
        if exhaustion is not None:
            events.append(Event(exhaustion.at, lambda: self._exhaust(exhaustion.heap)))
            events.append(Event(exhaustion.at + exhaustion.seconds, self._free_cma))
        return sorted(events, key=lambda event: event.at)

    def _exhaust(self, heap: Optional[str]) -> str:
        try:
            self.hog = CmaHog(self.socket, heap)
        except OSError as exc:
            raise ScenarioError(f"cma-exhaustion: {exc.strerror}") from None
        held = self.hog.fill()
        return f"cma-exhaustion: {self.hog.heap} is full: {held} bytes taken"

    def _free_cma(self) -> str:
        assert self.hog is not None
        heap = self.hog.heap
        self.hog.release()
        self.hog = None
        return f"cma-exhaustion: {heap} freed"

    def _timeline(self, view: LiveView) -> None:
        pending = self._events()
        started = time.monotonic()
        while pending or not all(app.finished for app in self.apps):
            t = time.monotonic() - started
            while pending and pending[0].at <= t:
                view.event(t, pending.pop(0).action())
            for app in self.apps:
                if app.newly_exited():
                    view.event(t, f"{app.name}: {app.status}")
            view.refresh(t)
            time.sleep(TICK)

    def run(self) -> bool:
        """Play the scenario and print its summary; False if SIGINT cut it short."""
        began = time.monotonic()
        before = after = Totals(None, None)
        interrupted: Optional[float] = None
        try:
            self._start_daemon()
            time.sleep(self.scenario.settle)
            before = read_totals(self.mount)
            view = LiveView(self.out, self.apps)
            view.event(0.0, f"scenario {self.scenario.name}: {self.scenario.board}, "
                            f"faults: {', '.join(self.scenario.fault_names) or 'none'}")
            self._timeline(view)
            time.sleep(self.scenario.settle)
            after = read_totals(self.mount)
        except KeyboardInterrupt:
            interrupted = time.monotonic() - began
            after = read_totals(self.mount)
        finally:
            for app in self.apps:
                app.kill()
            if self.hog is not None:
                self.hog.release()
            self._stop_daemon()
        self.out.write(summary(self.scenario.name, time.monotonic() - began, self.apps, before, after,
                               amphion.TRACKER_ROOT if driver_of(self.scenario.board) == "amphion" else None,
                               interrupted, self.scenario.length))
        self.out.flush()
        return interrupted is None


def run_scenario(argument: str, mount: str, out: TextIO = sys.stdout) -> int:
    """The ``scenario`` command: 0 once the scenario ran, whatever its applications did; 130 if
    SIGINT cut it short (its summary says so); 2 for a bad scenario file. It could not run:
    OSError (ScenarioError), which the command reports."""
    try:
        path = resolve(argument)
        scenario = load(path)
    except ValueError as exc:
        print(f"vpu-sim: scenario: {exc}", file=sys.stderr)
        return 2
    return 0 if ScenarioRun(scenario, mount, socket_path(mount), out).run() else 130
