"""``memtrackfs capture``: a board's kernel files, as they read now, into one JSON file.

It reads every file each kind of ``filekinds.KINDS`` names under a root (``/`` on a board),
as cat would, and keeps their text as it is: the capture is a field report's evidence, and what
``memtrackfs load`` recreates a mount from. A file that is not there is left out; one that is
there but cannot be read (debugfs as a user) is listed with the reason.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from memtrackfs.tools.filekinds import KINDS

FORMAT = "memtrackfs-capture"
VERSION = 1


def capture(root: str) -> dict[str, Any]:
    files: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    for kind in KINDS:
        for relative in kind.paths(root):
            try:
                files[relative] = kind.read(os.path.join(root, relative))
            except FileNotFoundError:
                continue
            except OSError as exc:
                unreadable[relative] = exc.strerror or str(exc)
    uname = os.uname()
    return {"capture": FORMAT, "version": VERSION, "captured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": uname.nodename, "kernel": uname.release, "root": os.path.abspath(root),
            "files": files, "unreadable": unreadable}


def dumps(snapshot: dict[str, Any]) -> str:
    # ensure_ascii: undecodable bytes (kept as surrogates) survive as \\udcXX escapes
    return json.dumps(snapshot, indent=1) + "\n"


def load_capture(path: str) -> dict[str, Any]:
    """A capture file; ValueError naming it if it is not one."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except ValueError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("capture") != FORMAT or not isinstance(data.get("files"), dict):
        raise ValueError(f"{path} is not a memtrackfs capture (make one with `memtrackfs capture -o FILE`)")
    if data.get("version") != VERSION:
        raise ValueError(f"{path}: a version {data.get('version')} capture; this memtrackfs reads version {VERSION}")
    return data
