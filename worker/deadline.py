"""The running job's time limit, enforced between and inside LLM calls in every pool.

Celery enforces TASK_TIME_LIMIT only in the prefork pool; the threads pool (the
default) cannot kill a thread. So the task sets a deadline for its thread, and the
LLM client caps each request's timeout and each retry's wait by what is left of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from worker.errors import JobTimedOut

__all__ = ["cap", "check", "job_deadline", "remaining"]

_deadline: ContextVar[tuple[float, int] | None] = ContextVar("kcw_job_deadline", default=None)


@contextmanager
def job_deadline(seconds: float, limit: int) -> Iterator[None]:
    """Give the code inside `seconds` to run; `limit` is TASK_TIME_LIMIT, for the message."""
    token = _deadline.set((time.monotonic() + seconds, limit))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left to the running job, or None outside a job."""
    current = _deadline.get()
    return None if current is None else current[0] - time.monotonic()


def check() -> None:
    """Raise JobTimedOut if the running job has used up its time."""
    current = _deadline.get()
    if current is not None and time.monotonic() >= current[0]:
        raise JobTimedOut(
            f"The job ran past its time limit (TASK_TIME_LIMIT={current[1]}s) and was "
            "stopped; raise TASK_TIME_LIMIT, lower max_tokens, or split the input."
        )


def cap(seconds: float) -> float:
    """`seconds`, or less if the running job has less time left (never below 0.1 s)."""
    left = remaining()
    return seconds if left is None else max(0.1, min(seconds, left))
