"""Testing support: the pytest plugin (entry point ``pytest11``) and the helpers it is built on.

``assert_no_leak(before, after)`` compares two ``Mount.snapshot()``; ``Mount.settle()`` waits for
the releases of exited processes (see ``memtrackfs.testing.plugin`` for the fixtures).
"""
from memtrackfs.testing.helpers import Mount, assert_no_leak

__all__ = ["Mount", "assert_no_leak"]
