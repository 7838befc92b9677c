"""The Python versions pyproject.toml claims can run the code: its syntax, and the standard
library modules it imports (a module newer than the claimed minimum breaks the install there)."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
# Standard library modules the code may use that are newer than Python 3.8.
NEW_MODULES = {"tomllib": (3, 11), "zoneinfo": (3, 9), "graphlib": (3, 9)}


def _minimum() -> tuple[int, int]:
    claim = tomllib.loads((TOP / "pyproject.toml").read_text())["project"]["requires-python"]
    assert claim.startswith(">="), claim
    major, minor = claim[2:].split(".")[:2]
    return int(major), int(minor)


def test_the_claimed_minimum_python_runs_every_module() -> None:
    minimum = _minimum()
    too_new = []
    for path in sorted([*TOP.glob("memtrackfs/**/*.py"), *TOP.glob("vpu_sim/**/*.py")]):
        tree = ast.parse(path.read_text(), str(path), feature_version=minimum)  # syntax of that version
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                needed = NEW_MODULES.get(name.split(".")[0])
                if needed and needed > minimum:
                    too_new.append(f"{path.relative_to(TOP)} imports {name} (Python {needed[0]}.{needed[1]})")
    assert not too_new, f"pyproject.toml claims Python {minimum[0]}.{minimum[1]}, but: {too_new}"
