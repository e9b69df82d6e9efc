"""Seconds-scale retries: what is retried, how often, and how long each wait is."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tenacity import Future as AttemptOutcome
from tenacity import RetryCallState, Retrying

from worker.errors import (
    ContextLengthExceeded,
    LLMRateLimited,
    LLMRequestRejected,
    LLMResponseInvalid,
    LLMUnavailable,
)
from worker.llm.retrying import WaitRetryAfter, call_retrying


def state_after(error: BaseException, attempt: int) -> RetryCallState:
    """The retry state tenacity hands the wait strategy after attempt `attempt` failed."""
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    outcome = AttemptOutcome(attempt)
    outcome.set_exception(error)
    state.outcome = outcome
    return state


def failing(*errors: BaseException, result: str = "ok") -> tuple[Callable[[], str], list[int]]:
    """A call that raises `errors` in turn and then returns `result`; also counts the calls."""
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return fn, calls


@pytest.mark.parametrize(
    ("retry_after", "wait"), [(2.0, 2.0), (0.0, 0.0), (-3.0, 0.0), (29.5, 29.5)]
)
def test_wait_is_what_retry_after_asked(retry_after: float, wait: float) -> None:
    strategy = WaitRetryAfter(max_wait=30.0)

    assert strategy(state_after(LLMRateLimited("429", retry_after=retry_after), 1)) == wait


def test_retry_after_is_capped_at_max_wait() -> None:
    strategy = WaitRetryAfter(max_wait=30.0)

    assert strategy(state_after(LLMUnavailable("503", retry_after=3600.0), 1)) == 30.0


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5])
def test_without_retry_after_the_wait_is_jittered_exponential(attempt: int) -> None:
    strategy = WaitRetryAfter(max_wait=30.0, multiplier=0.5)
    ceiling = 0.5 * 2 ** (attempt - 1)

    waits = [strategy(state_after(LLMUnavailable("down"), attempt)) for _ in range(200)]

    assert all(0.0 <= w <= ceiling for w in waits)
    assert len(set(waits)) > 100  # jittered, not a fixed step


def test_exponential_wait_never_exceeds_max_wait() -> None:
    strategy = WaitRetryAfter(max_wait=3.0, multiplier=0.5)

    waits = [strategy(state_after(LLMUnavailable("down"), 15)) for _ in range(200)]

    assert max(waits) <= 3.0
    assert max(waits) > 1.5


def test_unavailable_is_retried_until_it_succeeds() -> None:
    sleeps: list[float] = []
    fn, calls = failing(
        LLMUnavailable("503", retry_after=1.0), LLMRateLimited("429", retry_after=2.0)
    )

    assert call_retrying(fn, attempts=5, max_wait=30.0, sleep=sleeps.append) == "ok"
    assert len(calls) == 3
    assert sleeps == [1.0, 2.0]


@pytest.mark.parametrize("attempts", [1, 2, 5])
def test_retries_stop_after_attempts_and_reraise_the_last_error(attempts: int) -> None:
    sleeps: list[float] = []
    errors = [LLMUnavailable(f"down {i}", retry_after=0.5) for i in range(1, 10)]
    fn, calls = failing(*errors)

    with pytest.raises(LLMUnavailable, match=f"^down {attempts}$"):
        call_retrying(fn, attempts=attempts, max_wait=30.0, sleep=sleeps.append)

    assert len(calls) == attempts
    assert sleeps == [0.5] * (attempts - 1)


@pytest.mark.parametrize(
    "error",
    [
        LLMRequestRejected("HTTP 400"),
        ContextLengthExceeded("too long"),
        LLMResponseInvalid("bad output", "{}"),
        ValueError("not ours"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_rejected_invalid_and_foreign_errors_are_never_retried(error: Exception) -> None:
    sleeps: list[float] = []
    fn, calls = failing(error)

    with pytest.raises(type(error)) as caught:
        call_retrying(fn, attempts=5, max_wait=30.0, sleep=sleeps.append)

    assert caught.value is error
    assert len(calls) == 1
    assert sleeps == []
