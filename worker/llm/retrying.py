"""Seconds-scale retries of one LLM call: jittered exponential backoff that honours Retry-After."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from worker.errors import LLMUnavailable

__all__ = ["WaitRetryAfter", "call_retrying"]

T = TypeVar("T")


class WaitRetryAfter:
    """Wait what the server asked for in Retry-After, else a jittered exponential backoff."""

    def __init__(self, max_wait: float, multiplier: float = 0.5) -> None:
        self.max_wait = max_wait
        self._fallback = wait_random_exponential(multiplier=multiplier, max=max_wait)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if (
            isinstance(exc, LLMUnavailable)
            and exc.retry_after is not None
            and math.isfinite(exc.retry_after)
        ):
            return float(min(max(exc.retry_after, 0.0), self.max_wait))
        return float(self._fallback(state))


def call_retrying(
    fn: Callable[[], T],
    *,
    attempts: int,
    max_wait: float,
    sleep: Callable[[float], None],
) -> T:
    """Run `fn`, retrying only `LLMUnavailable` (and so `LLMRateLimited`)."""
    retrying = Retrying(
        retry=retry_if_exception_type(LLMUnavailable),
        stop=stop_after_attempt(attempts),
        wait=WaitRetryAfter(max_wait),
        sleep=sleep,
        reraise=True,
    )
    return retrying(fn)
