"""The job deadline: time left, request timeouts capped by it, and the error past it."""

from __future__ import annotations

import time

import pytest

from tasks.base import equal_jitter
from worker import deadline
from worker.errors import JobTimedOut


def test_outside_a_job_nothing_is_capped_or_raised() -> None:
    assert deadline.remaining() is None
    assert deadline.cap(120) == 120
    deadline.check()


def test_inside_a_job_timeouts_shrink_to_what_is_left() -> None:
    with deadline.job_deadline(5, 10):
        left = deadline.remaining()
        assert left is not None and 4 < left <= 5
        assert deadline.cap(120) <= 5
        assert deadline.cap(1) == 1
    assert deadline.remaining() is None


def test_past_the_deadline_the_job_fails_naming_task_time_limit() -> None:
    with deadline.job_deadline(0.05, 10):
        time.sleep(0.06)
        assert deadline.cap(120) == pytest.approx(0.1)  # never a zero timeout
        with pytest.raises(JobTimedOut, match=r"TASK_TIME_LIMIT=10s"):
            deadline.check()


def test_nested_deadlines_restore_the_outer_one() -> None:
    with deadline.job_deadline(60, 70):
        with deadline.job_deadline(1, 2):
            assert (deadline.remaining() or 0) <= 1
        assert (deadline.remaining() or 0) > 50


@pytest.mark.parametrize("countdown", [5, 40, 300])
def test_equal_jitter_waits_at_least_half_and_at_most_all(countdown: int) -> None:
    assert equal_jitter(countdown, 0.0) == countdown / 2
    assert equal_jitter(countdown, 1.0) == countdown
    assert countdown / 2 < equal_jitter(countdown, 0.5) < countdown
