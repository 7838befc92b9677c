"""Unit tests of the pure tracking core (no mount): what the oracle traces cannot show."""
from __future__ import annotations

import errno
import gc
import tracemalloc

import pytest

from memtrackfs.errors import KernelError
from memtrackfs.kernel import Kernel
from memtrackfs.model.tracker import SIZE_MAX, Leaf
from memtrackfs.render.memtrack import render_memtrack


@pytest.fixture
def kernel() -> Kernel:
    return Kernel()


def test_named_sub_removes_the_oldest_matching_leaf_via_the_index(kernel: Kernel) -> None:
    t = kernel.tracker
    root = t.create_root("r", 1, 1)
    for tgid in (10, 11, 12):
        t.add(root, 4096, "mbi", tgid, tgid)
    t.add(root, 8192, "mbi", 13, 13)
    t.sub(root, 4096, "mbi")
    assert [(c.tgid, c.bytes) for c in root.children] == [(11, 4096), (12, 4096), (13, 8192)]
    assert root.leaf_index[("mbi", 4096)][0].tgid == 11
    t.sub(root, 4096, "mbi")
    t.sub(root, 4096, "mbi")
    assert type(root.leaf_index[("mbi", 8192)]) is Leaf and ("mbi", 4096) not in root.leaf_index
    assert root.usage == 8192 and root.count == 0


def test_totals_are_incremental_and_wrap_like_size_t(kernel: Kernel) -> None:
    t = kernel.tracker
    root = t.create_root("r", 1, 1)
    inst = t.create_node(root, "instance", 2, 2)
    t.add(inst, SIZE_MAX, "huge", 2, 2)
    t.add(inst, 2, None, 2, 2)
    assert inst.usage == 1 and root.usage == 1  # (2**64 - 1) + 2 wraps to 1
    t.add(inst, SIZE_MAX, None, 2, 2)           # own bytes wrap too: 2 + 2**64 - 1 = 1
    assert inst.own == 1 and inst.count == 2
    t.destroy(inst)
    assert root.usage == 0 and root.children == {}


def test_refusals_change_nothing(kernel: Kernel) -> None:
    t = kernel.tracker
    root = t.create_root("dev", 1, 1)
    node = root
    for _ in range(15):
        node = t.create_node(node, None, 1, 1)
    before = render_memtrack(root)
    for call, code in [(lambda: t.create_node(node, "x", 1, 1), errno.ENOSPC),
                       (lambda: t.create_root("dev", 1, 1), errno.EEXIST),
                       (lambda: t.create_root("a/b", 1, 1), errno.EINVAL),
                       (lambda: t.add(root, 1, "tab\tname", 1, 1), errno.EINVAL),
                       (lambda: t.add(root, 1, "\u0085", 1, 1), errno.EINVAL),
                       (lambda: t.create_node(root, "n" * 256, 1, 1), errno.ENAMETOOLONG)]:
        with pytest.raises(KernelError) as err:
            call()
        assert err.value.errno == code
    assert render_memtrack(root) == before
    t.add(node, 7, "too-deep", 1, 1)  # depth 15: falls back to the node's own counter
    assert node.own == 7 and node.children == {}


def test_notifications_are_collected_in_rfc_order_and_delivered_after_the_lock(kernel: Kernel) -> None:
    seen = []
    with kernel.transaction() as k:
        root = k.tracker.create_root("r", 1, 1)
        inst = k.tracker.create_node(root, "instance", 1, 1)
        queue = k.tracker.create_node(inst, "output", 1, 1)
        for node in (root, inst):
            k.tracker.register_notify(node, lambda n, usage: seen.append((n.name, usage, kernel.lock.locked())))
        k.tracker.set_notify_delay(inst, 0)
        k.tracker.add(queue, 4096, None, 1, 1)
        assert seen == []  # nothing is called while the lock is held
    assert seen == [("instance", 4096, False), ("r", 4096, False)]
    with kernel.transaction() as k:
        k.tracker.set_notify_delay(root, -1)
        k.tracker.destroy(inst)
    assert len(seen) == 2  # the root's notifications are off; the destroyed node's are cancelled
    assert inst.alive is False and inst.notify is None
    with kernel.transaction() as k:
        k.tracker.set_notify_delay(root, 0)
        k.tracker.add(root, 1, None, 1, 1)
    assert seen[-1] == ("r", 1, False)


def test_leak_report_only_when_enabled_and_non_empty(kernel: Kernel) -> None:
    t = kernel.tracker
    for site in kernel.log.sites:
        site.enabled = True
    root = t.create_root("vpu", 1, 1)
    empty = t.create_node(root, "instance", 1, 1)
    t.destroy(empty)
    assert list(kernel.log.records) == []
    busy = t.create_node(root, None, 1, 1)
    t.add(busy, 4096, "udata", 1, 1)
    t.destroy(busy)
    assert [r.message for r in kernel.log.records] == [
        "v4l2-memtrack: Memory Tracker: vpu",
        "v4l2-memtrack:   (unnamed): usage=4096 bytes, count=0",
        "v4l2-memtrack:     udata [leaf]: usage=4096 bytes, count=1"]
    assert {r.level for r in kernel.log.records} == {7}


def test_a_destroyed_node_is_not_kept_for_its_pending_notification() -> None:
    """A change schedules a watched node's coalesced notification (up to 2^31-1 ms away); if the
    node is destroyed meanwhile, its subtree must be freed now, not when the work would run."""
    kernel = Kernel()
    try:
        def build() -> None:
            with kernel.transaction() as k:
                root = k.tracker.create_root("watched", 1, 1)
                k.tracker.register_notify(root, lambda node, usage: None)
                k.tracker.set_notify_delay(root, 2**31 - 1)
                for i in range(20_000):
                    k.tracker.add(root, 4096, f"buffer{i}", 1, 1)  # scheduled at the first
            with kernel.transaction() as k:
                k.tracker.destroy(k.tracker.roots["watched"])

        build()  # warm up the allocator and the name cache
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(3):
                build()
            gc.collect()
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert kept < 1 << 20, f"{kept >> 10} KiB kept after destroying 3 x 20000 leaves"
    finally:
        kernel.shutdown()
