"""What the running job has done so far, for the series recorded when it ends.

The task sets a meter for its thread (a context variable, like the deadline); every LLM
call adds its seconds to it and counts its tokens under the job's kind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from worker.metrics.recent import RECENT
from worker.metrics.series import (
    GENERATION_TOKENS,
    JOB_DURATION,
    JOB_LLM,
    JOB_QUEUE_WAIT,
    JOBS_FAILED,
    JOBS_RETRIED,
    JOBS_SUCCEEDED,
    LLM_REQUESTS,
    PROMPT_TOKENS,
    SWITCH,
)

__all__ = ["JobMeter", "count_call", "metered_job"]

# LLM calls made outside any job (`kcw serve`'s probes, the CLI) are counted under this kind.
NO_JOB = "none"


@dataclass
class JobMeter:
    """The running job: its kind, the seconds its LLM calls took, and how it ended."""

    kind: str
    llm_seconds: float = 0.0
    outcome: str = ""  # succeeded, failed, retried, or "" (handed on: replaced or ignored)
    error: str = ""

    def succeeded(self) -> None:
        self.outcome = "succeeded"

    def failed(self, error: BaseException) -> None:
        self.outcome, self.error = "failed", type(error).__name__

    def retried(self, reason: BaseException) -> None:
        self.outcome, self.error = "retried", type(reason).__name__


_current: ContextVar[JobMeter | None] = ContextVar("kcw_job_meter", default=None)


@contextmanager
def metered_job(kind: str, sent_at: float | None = None) -> Iterator[JobMeter]:
    """Count the LLM calls made inside under `kind`; record the job's wait, time and outcome.

    `sent_at` (epoch seconds) is when the job was sent, for its queue wait.
    """
    meter = JobMeter(kind)
    started = time.time()
    if SWITCH.on and sent_at is not None:
        JOB_QUEUE_WAIT.labels(kind).observe(max(0.0, started - sent_at))
    token = _current.set(meter)
    RECENT.started()
    try:
        yield meter
    finally:
        _current.reset(token)
        RECENT.ended()
        if SWITCH.on:
            _record(meter, time.time() - started)


def _record(meter: JobMeter, seconds: float) -> None:
    kind = meter.kind
    if meter.outcome == "succeeded":
        JOBS_SUCCEEDED.labels(kind).inc()
    elif meter.outcome == "failed":
        JOBS_FAILED.labels(kind, meter.error).inc()
    elif meter.outcome == "retried":
        JOBS_RETRIED.labels(kind, meter.error).inc()
    JOB_DURATION.labels(kind).observe(seconds)
    JOB_LLM.labels(kind).observe(meter.llm_seconds)


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
    meter = _current.get()
    if meter is not None:
        meter.llm_seconds += seconds
    if not SWITCH.on:
        return
    LLM_REQUESTS.labels(server, status).inc()
    kind = meter.kind if meter is not None else NO_JOB
    if model is not None:
        PROMPT_TOKENS.labels(kind, model).inc(prompt_tokens)
        GENERATION_TOKENS.labels(kind, model).inc(generated_tokens)
