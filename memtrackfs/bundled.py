"""Files shipped inside the package: the leak scripts for a board, the example trace, the docs.

They live under ``memtrackfs/data/`` (``scripts/`` and ``examples/`` in a clone link there), so a
wheel installs them with the code and the commands can point to them wherever the package is.
"""
from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
SCRIPTS = DATA / "scripts"
TRACES = DATA / "traces"
DOCS = DATA / "docs"


def leak_scripts() -> dict[str, Path]:
    """The POSIX sh scripts to copy to a board, by file name."""
    return {path.name: path for path in sorted(SCRIPTS.glob("*.sh"))}


def traces() -> dict[str, Path]:
    """The example traces, by name without ``.trace``."""
    return {path.stem: path for path in sorted(TRACES.glob("*.trace"))}


def doc(relative: str) -> Path:
    """A document of ``docs/`` (e.g. ``scenarios.md``), where this installation has it."""
    return (DOCS / relative).resolve()
