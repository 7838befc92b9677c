"""Which fusepy-API module to use: mfusepy (the maintained fork) or fusepy 3.0.1 (module ``fuse``).

The code uses only fusepy 3.0.1's API, so both run it. ``MEMTRACKFS_FUSE=fusepy`` forces fusepy
(CI mounts once that way to keep the promise); otherwise mfusepy, falling back to fusepy.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType


def load_fuse_module() -> ModuleType:
    choice = os.environ.get("MEMTRACKFS_FUSE", "")
    if choice == "fusepy":
        return importlib.import_module("fuse")
    if choice not in ("", "mfusepy"):
        raise SystemExit(f"MEMTRACKFS_FUSE={choice!r}: expected 'mfusepy' or 'fusepy'")
    try:
        return importlib.import_module("mfusepy")
    except ImportError:
        return importlib.import_module("fuse")
