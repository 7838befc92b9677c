"""Which fusepy-API module to use: mfusepy (the maintained fork) or fusepy 3.0.1 (module ``fuse``);
and the Python thread states of libfuse's worker threads, kept for their life.

The code uses only fusepy 3.0.1's API, so both run it. ``MEMTRACKFS_FUSE=fusepy`` forces fusepy
(CI mounts once that way to keep the promise); otherwise mfusepy, falling back to fusepy.
"""
from __future__ import annotations

import ctypes
import functools
import importlib
import os
import threading
from types import ModuleType
from typing import Any, Callable


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


# -- libfuse's worker threads keep their Python thread state -----------------------------------
# libfuse calls every operation on one of its own worker threads, which Python does not know.
# For each such callback ctypes makes a new PyThreadState and destroys it on return; CPython
# 3.11 mmaps a 16 KiB frame stack for each new thread state and munmaps it at the end, and in a
# multithreaded process each munmap is a TLB shootdown (an IPI to every CPU). That costs about
# 20 us per FUSE request, more than half of an open+read+close of a small file (about 11
# requests). Taking one more GIL-state reference the first time a worker thread runs an
# operation keeps its thread state for the thread's life. libfuse retires idle workers beyond
# ten: the states of retired ones are freed when the next new worker arrives, so they stay
# bounded by the workers that ever ran at once.
_PyGILState_Ensure = ctypes.PYFUNCTYPE(ctypes.c_int)(("PyGILState_Ensure", ctypes.pythonapi))
_PyThreadState_Get = ctypes.PYFUNCTYPE(ctypes.c_void_p)(("PyThreadState_Get", ctypes.pythonapi))
_PyThreadState_Clear = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)(("PyThreadState_Clear", ctypes.pythonapi))
_PyThreadState_Delete = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)(("PyThreadState_Delete", ctypes.pythonapi))


class _WorkerThreadStates:
    def __init__(self) -> None:
        self._local = threading.local()  # lives in the thread state: set once it is kept
        self._kept: dict[int, int] = {}  # native thread id -> its kept PyThreadState
        self._lock = threading.Lock()

    def keep(self) -> None:
        if getattr(self._local, "kept", False):
            return
        self._local.kept = True
        if threading.get_ident() in threading._active:  # type: ignore[attr-defined]
            return  # a thread Python started (tests): Python owns its state
        tid = threading.get_native_id()
        with self._lock:
            for other, state in list(self._kept.items()):
                # A kept state whose thread has exited (its id gone, or reused by this thread).
                if other == tid or not os.path.exists(f"/proc/self/task/{other}"):
                    del self._kept[other]
                    _PyThreadState_Clear(state)
                    _PyThreadState_Delete(state)
            _PyGILState_Ensure()  # one reference more than the callback's: the state outlives it
            self._kept[tid] = _PyThreadState_Get()


_worker_states = _WorkerThreadStates()


def keeping_thread_state(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def operation(*args: Any, **kwargs: Any) -> Any:
        _worker_states.keep()
        return method(*args, **kwargs)
    return operation
