"""memtrackfs.processes reads a real process's name, state and identity from /proc."""
from __future__ import annotations

import signal
import subprocess

from memtrackfs.processes import comm, identify, state
from memtrackfs.testing.helpers import wait_for


def test_comm_and_state_follow_a_real_process() -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        wait_for(lambda: comm(child.pid) == "sleep", what="the child to exec sleep")  # python's name before
        wait_for(lambda: state(child.pid) == "S", what="sleep to sleep")
        child.send_signal(signal.SIGSTOP)
        wait_for(lambda: state(child.pid) == "T", what="sleep to stop")
        child.kill()
        wait_for(lambda: state(child.pid) == "Z", what="sleep to become a zombie")
        assert identify(child.pid) is None          # a zombie has exited for our purpose
    finally:
        child.kill()
        child.wait()
    assert comm(child.pid) is None
    assert state(child.pid) is None
