"""The device-node table (pure model): the class-device index sysfs shows for each node."""
from __future__ import annotations

from typing import Any

from memtrackfs.model.devices import DeviceTable


class NoDriver:
    name = "none"

    def call(self, event: dict[str, Any], timeout: float) -> dict[str, Any]:
        raise AssertionError("not called")


def _sysfs(label: str) -> dict[str, str]:
    return {"subsystem": "video4linux", "label": label, "parent": "2c000000.vpu", "driver": "amphion-vpu"}


def test_a_new_node_takes_the_lowest_index_no_live_sibling_uses() -> None:
    """get_index() of v4l2-dev.c: an index freed by an unregistered node is taken again."""
    table = DeviceTable()
    first = table.register("video0", NoDriver(), _sysfs("dec"))
    second = table.register("video1", NoDriver(), _sysfs("enc"))
    assert (first.identity.index, second.identity.index) == (0, 1)
    table.unregister(first)
    third = table.register("video2", NoDriver(), _sysfs("dec"))
    assert third.identity.index == 0
    assert table.register("video3", NoDriver(), _sysfs("x")).identity.index == 2
