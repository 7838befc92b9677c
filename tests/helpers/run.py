"""Running ``memtrackfs run`` from the tests, as a user would (a separate process)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

# vpu-sim and python are installed beside the interpreter running the tests; PYTHONPATH makes
# them, and the run's daemons (started from /), import this checkout whatever the venv points to.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run_command(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``memtrackfs run ARGS`` to its end, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "memtrackfs", "run", *args], capture_output=True, text=True,
                          env=env or ENV, cwd=ROOT, timeout=timeout)


def start_run(*args: str, **popen: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "memtrackfs", "run", *args], env=ENV, cwd=ROOT, **popen)
