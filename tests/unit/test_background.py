"""The background writer consumes every item in order, hands its error to the caller and never
leaves its thread running."""

from __future__ import annotations

import threading

import pytest

from crm_predict.core.background import background_writer


def test_every_item_is_consumed_in_order_before_the_block_ends():
    seen: list[int] = []
    with background_writer(seen.append, depth=1) as writer:
        for i in range(50):
            writer.put(i)
    assert seen == list(range(50))
    assert not [t for t in threading.enumerate() if t.name == "background-writer"]


def test_the_consumers_error_reaches_the_caller_and_later_items_are_dropped():
    seen: list[int] = []

    def consume(i: int) -> None:
        if i == 3:
            raise ValueError("disk full")
        seen.append(i)

    with pytest.raises(ValueError, match="disk full"), background_writer(consume, 1) as writer:
        for i in range(100):
            writer.put(i)
    assert seen == [0, 1, 2]


def test_a_failing_block_drops_what_is_queued_and_keeps_its_own_error():
    release = threading.Event()
    seen: list[int] = []

    def consume(i: int) -> None:
        release.wait(5)
        seen.append(i)

    with pytest.raises(KeyError), background_writer(consume, depth=2) as writer:
        writer.put(0)
        writer.put(1)
        release.set()
        raise KeyError("caller failed")
    assert len(seen) <= 2
