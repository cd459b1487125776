"""The capture → detector hand-off: each drop policy does what its name says, and counts it."""

from __future__ import annotations

import threading

from daemon.frames import END_OF_STREAM
from daemon.handoff import DropPolicy, Handoff


def test_latest_policy_keeps_the_newest_items_and_counts_every_drop() -> None:
    handoff: Handoff[int] = Handoff("t", capacity=2, policy=DropPolicy.LATEST, stop=threading.Event())
    for item in range(5):
        assert handoff.put(item)  # never blocks, never refuses
    assert handoff.dropped_total == 3
    assert [handoff.get(0.1), handoff.get(0.1)] == [3, 4]
    assert handoff.get(0.01) is None


def test_wait_policy_blocks_the_producer_until_there_is_room_and_loses_nothing() -> None:
    handoff: Handoff[int] = Handoff("t", capacity=2, policy=DropPolicy.WAIT, stop=threading.Event())
    produced = threading.Event()

    def producer() -> None:
        for item in range(10):
            handoff.put(item)
        handoff.close()
        produced.set()

    thread = threading.Thread(target=producer)
    thread.start()
    received = []
    while (item := handoff.get(5.0)) is not END_OF_STREAM:
        assert item is not None, "the producer stalled"
        received.append(item)
        assert len(handoff) <= 2
    thread.join(5.0)
    assert produced.is_set()
    assert received == list(range(10))
    assert handoff.dropped_total == 0


def test_a_waiting_producer_is_released_by_the_stop_event() -> None:
    stop = threading.Event()
    handoff: Handoff[int] = Handoff("t", capacity=1, policy=DropPolicy.WAIT, stop=stop)
    assert handoff.put(1)
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(handoff.put(2)))
    thread.start()
    stop.set()
    thread.join(2.0)
    assert not thread.is_alive(), "put() ignored the stop event"
    assert result == [False]


def test_close_delivers_what_is_left_then_end_of_stream_forever() -> None:
    handoff: Handoff[str] = Handoff("t", capacity=4, policy=DropPolicy.LATEST, stop=threading.Event())
    handoff.put("a")
    handoff.close()
    assert not handoff.put("late"), "a closed hand-off accepted an item"
    assert handoff.get(0.1) == "a"
    assert handoff.get(0.1) is END_OF_STREAM
    assert handoff.get(0.1) is END_OF_STREAM


def test_a_blocked_consumer_wakes_at_close() -> None:
    handoff: Handoff[int] = Handoff("t", capacity=1, policy=DropPolicy.WAIT, stop=threading.Event())
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(handoff.get(30.0)))
    thread.start()
    handoff.close()
    thread.join(2.0)
    assert got == [END_OF_STREAM]
