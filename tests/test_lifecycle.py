"""Shutdown order: producers stop first, each within one deadline, and a stuck stage stops no one else.

The stages here are recording fakes on purpose: the order of calls is the behaviour under test. Progress, the
record the watchdog reads, is real.
"""

from __future__ import annotations

import threading
import time

from daemon.lifecycle import Progress, start_in_order, stop_in_reverse


class RecordingStage:
    def __init__(self, name: str, calls: list[str], *, stuck: bool = False) -> None:
        self.name = name
        self.calls = calls
        self.stuck = stuck
        self.deadline: float | None = None

    def start(self) -> None:
        self.calls.append(f"start {self.name}")

    def stop(self, deadline: float | None = None) -> None:
        self.deadline = deadline
        self.calls.append(f"stop {self.name}")

    def join(self, timeout: float | None = None) -> bool:
        self.calls.append(f"join {self.name}")
        return not self.stuck


def test_stages_start_consumer_first_and_stop_producer_first() -> None:
    calls: list[str] = []
    stages = [RecordingStage(n, calls) for n in ("publisher", "events", "detect", "capture")]
    start_in_order(stages)
    assert stop_in_reverse(stages, time.monotonic() + 5.0) == []
    assert calls == [
        "start publisher", "start events", "start detect", "start capture",
        "stop capture", "join capture", "stop detect", "join detect",
        "stop events", "join events", "stop publisher", "join publisher",
    ]


def test_a_stuck_stage_is_reported_and_the_rest_are_still_stopped() -> None:
    calls: list[str] = []
    publisher = RecordingStage("publisher", calls)
    capture = RecordingStage("capture", calls, stuck=True)
    stuck = stop_in_reverse([publisher, capture], time.monotonic() + 0.1)
    assert stuck == ["capture"]
    assert calls[-2:] == ["stop publisher", "join publisher"]


def test_the_last_stage_gets_time_to_say_goodbye_even_after_the_deadline() -> None:
    calls: list[str] = []
    publisher = RecordingStage("publisher", calls)
    capture = RecordingStage("capture", calls)
    now = time.monotonic()
    stop_in_reverse([publisher, capture], now - 1.0, min_last_s=1.0)  # deadline already passed
    assert capture.deadline == now - 1.0
    assert publisher.deadline is not None and publisher.deadline >= now + 0.9


def test_a_stage_of_several_threads_is_busy_since_its_oldest_unfinished_unit() -> None:
    # The detector's streams run inferences side by side under one Progress: the watchdog must see the oldest
    # (a wedged one), not whichever began last.
    progress = Progress()
    entered = [threading.Event(), threading.Event()]
    leave = [threading.Event(), threading.Event()]

    def unit(index: int) -> None:
        with progress.busy():
            entered[index].set()
            leave[index].wait(10)

    threads = [threading.Thread(target=unit, args=(index,)) for index in range(2)]
    threads[0].start()
    assert entered[0].wait(10)
    oldest = progress.busy_since
    assert oldest is not None
    threads[1].start()
    assert entered[1].wait(10)
    assert progress.busy_since == oldest
    leave[0].set()
    threads[0].join(10)
    younger = progress.busy_since
    assert younger is not None and younger >= oldest
    leave[1].set()
    threads[1].join(10)
    assert progress.busy_since is None and progress.stuck_for() == 0.0
    assert progress.units == 2
