"""The scenarios shipped with vpu_sim (``vpu_sim/scenarios/*.toml``), found by name.

``vpu-sim scenario driver-leak`` runs the built-in ``driver-leak.toml``; anything that names an
existing file (or has a ``/`` or ends in ``.toml``) is a file of the user's.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from vpu_sim.boards import driver_of

BUILTIN = Path(__file__).resolve().parent.parent / "scenarios"


def builtin_scenarios() -> dict[str, Path]:
    return {path.stem: path for path in sorted(BUILTIN.glob("*.toml"))}


def is_file_argument(argument: str) -> bool:
    return os.path.exists(argument) or "/" in argument or argument.endswith(".toml")


def resolve(argument: str) -> str:
    """The scenario file ``argument`` names: a path, or a built-in scenario's name."""
    if is_file_argument(argument):
        return argument
    found = builtin_scenarios().get(argument)
    if found is None:
        raise ValueError(f"{argument}: no such file, nor a built-in scenario "
                         f"(built-in: {', '.join(builtin_scenarios())}; `vpu-sim scenario --list`)")
    return str(found)


def mount_board(argument: str) -> Optional[str]:
    """The board a mount must have for the scenario ``argument`` names: rk3588 for its MPP driver;
    None (the default mount) for the Amphion boards, and for a scenario that does not load
    (``vpu-sim scenario`` reports that itself)."""
    from vpu_sim.scenario.spec import load
    try:
        board = load(resolve(argument)).board
    except ValueError:
        return None
    return board if driver_of(board) == "mpp" else None


def summary_line(path: Path) -> str:
    """The start of a scenario file's leading comment, to its first ': ' or '. ': what it shows."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("#").strip())
    text = " ".join(words)
    ends = [at for at in (text.find(": "), text.find(". ")) if at >= 0]
    return text[:min(ends)] if ends else text


def listing() -> str:
    scenarios = builtin_scenarios()
    width = max(map(len, scenarios))
    return "".join(f"{name:<{width}}  {summary_line(path)}\n" for name, path in scenarios.items())
