"""In-flight windows: the AIMD limit per server, and the batch window of `kcw serve`."""

from __future__ import annotations

import pytest

from worker.batches.runner import with_margin
from worker.llm.limits import AdaptiveLimit, waiting_jobs, window_for, window_for_slots


def test_window_starts_at_capacity_unless_told_otherwise() -> None:
    assert AdaptiveLimit(8).limit == 8
    assert AdaptiveLimit(8, window=1.0).limit == 1
    assert AdaptiveLimit(0).limit == 1  # never zero: work must progress


def test_overload_halves_and_never_goes_below_one() -> None:
    window = AdaptiveLimit(16)
    window.on_overload()
    assert window.limit == 8
    for _ in range(10):
        window.on_overload()
    assert window.limit == 1


def test_successes_grow_about_one_per_window_up_to_capacity() -> None:
    window = AdaptiveLimit(16)
    window.on_overload()  # 8
    for _ in range(9):
        window.on_success()
    assert window.limit == 9  # 9 successes at a window of about 8-9
    for _ in range(1000):
        window.on_success()
    assert window.limit == 16


def test_set_capacity_restarts_the_window_there() -> None:
    window = AdaptiveLimit(64, window=1.0)
    window.set_capacity(8)
    assert (window.capacity, window.limit) == (8, 8)


def test_cap_at_running_only_shrinks() -> None:
    window = AdaptiveLimit(64)
    window.cap_at(20)
    assert window.limit == 20
    window.cap_at(40)
    assert window.limit == 20
    window.cap_at(0)
    assert window.limit == 1


@pytest.mark.parametrize(("slots", "window"), [(1, 1), (2, 2), (3, 3), (4, 5), (8, 10), (64, 80)])
def test_slots_get_a_short_queue_from_four_up(slots: int, window: int) -> None:
    assert window_for_slots(slots) == window


@pytest.mark.parametrize(("slots", "cap", "window"), [(8, 64, 10), (64, 64, 64), (None, 64, 64)])
def test_the_window_follows_the_slots_up_to_the_cap(
    slots: int | None, cap: int, window: int
) -> None:
    assert window_for(slots, cap) == window


def test_only_a_server_without_slots_gets_jobs_waiting_in_the_worker() -> None:
    assert waiting_jobs(64, None) == 32  # vLLM: a whole wave ends at once
    assert waiting_jobs(1, None) == 0
    assert waiting_jobs(10, 8) == 0  # llama-server queues in its own window


@pytest.mark.parametrize(("in_flight", "window"), [(1, 3), (8, 10), (10, 12), (64, 80)])
def test_the_batch_window_adds_a_quarter_of_queued_lines_and_at_least_two(
    in_flight: int, window: int
) -> None:
    assert with_margin(in_flight) == window
