"""What ``vpu-sim scenario`` shows: a live view of its applications, and the summary at the end.

On a terminal the view is one line per application, redrawn in place (ANSI cursor movements),
with the timeline's events printed above it; otherwise it writes plain lines: each event as it
happens and, every second, one line per running application.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, TextIO


@dataclass
class Stream:
    """One instance's progress as its application reports it (``--json``)."""
    frames: int = 0
    fps: float = 0.0
    usage: int = 0
    peak: int = 0


class AppState(Protocol):
    """What the view needs of a running application (``vpu_sim.scenario.runner.AppRun``)."""
    name: str
    what: str
    streams: dict[str, Stream]
    notes: list[dict[str, object]]

    @property
    def state(self) -> str: ...

    @property
    def status(self) -> str: ...


def _joined(app: AppState, field: str) -> str:
    """A field of each stream, joined by '+': a transcoder runs two instances, decode first."""
    labels = sorted(app.streams, key=lambda label: label.startswith("encode"))
    return "+".join(str(getattr(app.streams[label], field)) for label in labels) or "-"


def status_line(app: AppState) -> str:
    return (f"{app.name:<14} {app.what:<26} {app.state:<8} frames {_joined(app, 'frames'):>7}  "
            f"fps {_joined(app, 'fps'):>9}  usage {_joined(app, 'usage'):>19}")


class LiveView:
    def __init__(self, out: TextIO, apps: Sequence[AppState]) -> None:
        self.out = out
        self.apps = apps
        self.tty = out.isatty()
        self._drawn = 0          # status lines on screen below the events (terminal)
        self._printed = -1.0     # when the last plain progress lines were written

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _redraw(self, above: str = "") -> None:
        # Back to the first status line, then every line anew, each cleared to its end.
        text = f"\x1b[{self._drawn}F" if self._drawn else ""
        if above:
            text += above + "\x1b[K\n"
        text += "".join(status_line(app) + "\x1b[K\n" for app in self.apps)
        self._drawn = len(self.apps)
        self._write(text)

    def event(self, t: float, text: str) -> None:
        line = f"[{t:6.2f} s] {text}"
        if self.tty:
            self._redraw(above=line)
        else:
            self._write(line + "\n")

    def refresh(self, t: float) -> None:
        if self.tty:
            self._redraw()
        elif t - self._printed >= 1.0:
            self._printed = t
            self._write("".join(f"[{t:6.2f} s] {status_line(app)}\n" for app in self.apps if app.state == "running"))


@dataclass(frozen=True)
class Totals:
    """The driver's tree total and the Rockchip dma-buf total (None: the file is missing)."""
    tree: Optional[int]
    rk_kib: Optional[int]


def _change(before: Optional[int], after: Optional[int], unit: str) -> str:
    text = f"before {before if before is not None else '-'} {unit}, after {after if after is not None else '-'} {unit}"
    if before is not None and after is not None:
        text += f" ({after - before:+d})"
    return text


def summary(name: str, duration: float, apps: Sequence[AppState], before: Totals, after: Totals,
            tree_name: Optional[str], interrupted: Optional[float] = None, length: float = 0.0) -> str:
    """The table of applications, their notes, then the totals (the tree's only if the board has
    one); ``interrupted``: when SIGINT cut the scenario short, of the ``length`` it takes in full."""
    rows = [("app", "what", "frames", "peak usage (bytes)", "status")]
    rows += [(app.name, app.what, _joined(app, "frames"), _joined(app, "peak"), app.status) for app in apps]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    if interrupted is None:
        lines = [f"scenario {name}: done in {duration:.1f} s"]
    else:
        lines = [f"scenario {name}: INTERRUPTED at {interrupted:.1f} s of about {length:.1f} s "
                 f"(SIGINT): the applications still running were stopped"]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4] for row in rows]
    for app in apps:
        changes = [note for note in app.notes if note.get("event") == "resolution"]
        if changes:
            lines.append(f"  {app.name}: {len(changes)} resolution changes")
        lines += [f"  {app.name}: {note['text']}" for note in app.notes if note.get("event") != "resolution"]
    if tree_name is not None:
        lines.append(f"{tree_name} total: {_change(before.tree, after.tree, 'bytes')}")
    lines.append(f"rk_dmabuf/size: {_change(before.rk_kib, after.rk_kib, 'KiB')}")
    return "\n".join(lines) + "\n"


def exit_text(returncode: int, error: str, crashed: bool) -> str:
    """How an application ended, in words."""
    if returncode < 0:
        text = f"killed by {signal.Signals(-returncode).name}"
        return text + " (crash fault)" if crashed else text
    return "ok" if returncode == 0 else f"exit {returncode}: {error or 'no message'}"
