"""What the LLM client tells the metrics about each request: its status class and usage."""

from __future__ import annotations

from typing import Any

from worker.errors import (
    LLMRateLimited,
    LLMRequestRejected,
    LLMResponseInvalid,
    LLMServerDown,
    LLMUnavailable,
)
from worker.llm.passthrough import RawReply
from worker.llm.types import Completion, Usage
from worker.metrics.meter import count_call

__all__ = ["count_failure", "count_success", "status_class"]


def status_class(error: Exception) -> str:
    """The status class of a failed request, from the error it was translated to."""
    if isinstance(error, LLMServerDown):
        return "unreachable"
    if isinstance(error, LLMRateLimited | LLMRequestRejected):
        return "4xx"
    if isinstance(error, LLMUnavailable):
        return "5xx"
    if isinstance(error, LLMResponseInvalid):
        return "2xx"  # the server answered; its answer was not what was asked for
    return "error"


def count_failure(url: str, error: Exception) -> None:
    count_call(url, status_class(error))


def count_success(url: str, result: Any) -> None:
    """A request that succeeded; completions and raw replies carry tokens and seconds."""
    if isinstance(result, Completion):
        count_call(
            url,
            "2xx",
            model=result.model,
            prompt_tokens=result.usage.prompt_tokens,
            generated_tokens=result.usage.completion_tokens,
            seconds=result.usage.llm_seconds,
        )
    elif isinstance(result, RawReply):
        reported = result.body.get("usage")
        counts = reported if isinstance(reported, dict) else {}
        count_call(
            url,
            "2xx",
            model=str(result.body.get("model") or "unknown"),
            prompt_tokens=_int(counts.get("prompt_tokens")),
            generated_tokens=_int(counts.get("completion_tokens")),
            seconds=result.llm_seconds,
        )
    elif isinstance(result, tuple) and len(result) == 3 and isinstance(result[1], Usage):
        # Embeddings: (vectors, usage, model).
        count_call(
            url,
            "2xx",
            model=str(result[2]),
            prompt_tokens=result[1].prompt_tokens,
            seconds=result[1].llm_seconds,
        )
    else:
        count_call(url, "2xx")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
