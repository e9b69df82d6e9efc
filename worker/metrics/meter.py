"""What the running job has done so far, for the series recorded when it ends.

The task sets a meter for its thread (a context variable, like the deadline); every LLM
call adds its seconds to it and counts its tokens under the job's kind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from worker.metrics.series import GENERATION_TOKENS, LLM_REQUESTS, PROMPT_TOKENS

__all__ = ["JobMeter", "count_call", "metered_job"]

# LLM calls made outside any job (`kcw serve`'s probes, the CLI) are counted under this kind.
NO_JOB = "none"


@dataclass
class JobMeter:
    """The kind of the running job and the seconds its LLM calls took."""

    kind: str
    llm_seconds: float = 0.0


_current: ContextVar[JobMeter | None] = ContextVar("kcw_job_meter", default=None)


@contextmanager
def metered_job(kind: str) -> Iterator[JobMeter]:
    """Count the LLM calls made inside under `kind`."""
    meter = JobMeter(kind)
    token = _current.set(meter)
    try:
        yield meter
    finally:
        _current.reset(token)


def count_call(
    server: str,
    status: str,
    *,
    model: str | None = None,
    prompt_tokens: int = 0,
    generated_tokens: int = 0,
    seconds: float = 0.0,
) -> None:
    """One request to an LLM server: its status class, and on success its tokens and time."""
    LLM_REQUESTS.labels(server, status).inc()
    meter = _current.get()
    kind = meter.kind if meter is not None else NO_JOB
    if model is not None:
        PROMPT_TOKENS.labels(kind, model).inc(prompt_tokens)
        GENERATION_TOKENS.labels(kind, model).inc(generated_tokens)
    if meter is not None:
        meter.llm_seconds += seconds
