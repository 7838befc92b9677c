"""The emulated kernel's log: printk records as /dev/kmsg shows them, and dynamic debug sites.

Pure model: no locks, no I/O. The owner (``Kernel``) serialises access.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, NamedTuple

LEVEL_WARNING = 4
LEVEL_INFO = 6
LEVEL_DEBUG = 7
FACILITY_KERNEL = 0  # printk's own records
FACILITY_USER = 1    # LOG_USER: records written to /dev/kmsg without a facility

# The kernel's printk ring holds a bounded history; older records fall off the front.
DEFAULT_CAPACITY = 16384


class LogRecord(NamedTuple):
    level: int
    seq: int
    usec: int  # microseconds on the host's CLOCK_MONOTONIC: since boot, as printk's timestamps
    message: str
    facility: int = FACILITY_KERNEL


@dataclass
class DebugSite:
    """One pr_debug() call site, as lib/dynamic_debug.c lists it in ``control``."""

    filename: str
    lineno: int
    module: str
    function: str
    format: str
    enabled: bool = False


class KernelLog:
    """printk: numbered, timestamped records; once-only warnings; dynamic-debug-gated debug prints."""

    def __init__(self, clock_usec: Callable[[], int], sites: list[DebugSite],
                 capacity: int = DEFAULT_CAPACITY) -> None:
        self._clock_usec = clock_usec
        self.records: deque[LogRecord] = deque(maxlen=capacity)
        self.next_seq = 0
        self.sites = sites
        self._warned: set[str] = set()

    def set_debug_sites(self, changes: list[tuple[list[DebugSite], bool]]) -> None:
        """Turn the listed sites' printing on or off (a parsed dynamic_debug/control write)."""
        for selected, enabled in changes:
            for site in selected:
                site.enabled = enabled

    def emit(self, level: int, message: str, facility: int = FACILITY_KERNEL) -> None:
        self.records.append(LogRecord(level, self.next_seq, self._clock_usec(), message, facility))
        self.next_seq += 1

    def first_seq(self) -> int:
        """The oldest record still in the ring (next_seq when it is empty)."""
        return self.records[0].seq if self.records else self.next_seq

    def warn_once(self, site: str, message: str) -> None:
        """pr_warn_once(): each call site prints once per boot, whatever its arguments."""
        if site not in self._warned:
            self._warned.add(site)
            self.emit(LEVEL_WARNING, message)

    def info(self, message: str) -> None:
        self.emit(LEVEL_INFO, message)

    def debug(self, site: DebugSite, message: str) -> None:
        """pr_debug(): recorded only while the site is enabled through dynamic_debug/control."""
        if site.enabled:
            self.emit(LEVEL_DEBUG, message)
