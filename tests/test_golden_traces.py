"""Traces replayed onto a fresh mount read byte-for-byte like the RFC's own C code (the oracle).

The .out/.warn files were produced by ../shared/oracle (see golden/traces/README.md); this project
keeps its own copies so it stands alone.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import GOLDEN

from memtrackfs.testing.helpers import Mount, memtrackfs

TRACES = sorted((GOLDEN / "traces").glob("*.trace"))


@pytest.mark.parametrize("trace", TRACES, ids=[t.stem for t in TRACES])
def test_replay_matches_oracle(mount: Mount, trace: Path) -> None:
    # The oracle prints every pr_debug; the emulated kernel does once they are enabled.
    (mount / "sys/kernel/debug/dynamic_debug/control").write_bytes(b"file v4l2-memtrack.c +p\n")
    done = memtrackfs("replay", str(trace), "--mount", str(mount.path))
    assert done.stdout == trace.with_suffix(".out").read_bytes()
    # Once-only warnings and leak reports are the oracle's, in the same order, as dev/kmsg records.
    expected = [line.removeprefix("WARN: ") for line in trace.with_suffix(".warn").read_text().splitlines()]
    assert [r.split(";", 1)[1] for r in mount.kmsg() if r[0] in "47"] == expected


def test_there_are_enough_golden_traces() -> None:
    sizes = [sum(1 for _ in t.open()) for t in TRACES]
    assert len(TRACES) >= 8 and max(sizes) >= 10000
