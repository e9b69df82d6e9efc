"""The base class of every kc-worker task: what is retried, and what never is."""

from __future__ import annotations

from typing import Any

from celery import Task

from worker.config import get_settings
from worker.errors import LLMRateLimited, LLMRequestRejected, LLMResponseInvalid, LLMUnavailable

__all__ = ["LLMTask"]


class LLMTask(Task):  # type: ignore[type-arg]
    """Retries while the server is down (minutes, with backoff); fails bad input at once."""

    # Seconds-scale retries already happened inside the client; these are the minutes scale.
    autoretry_for = (LLMUnavailable, LLMRateLimited)
    retry_backoff = 5
    retry_jitter = True
    # Expected failures: logged without a traceback, never retried.
    throws = (LLMRequestRejected, LLMResponseInvalid)

    @property
    def max_retries(self) -> int:  # type: ignore[override]
        return get_settings().task_max_retries

    @property
    def retry_backoff_max(self) -> int:
        return get_settings().task_retry_backoff_max

    def progress(self, **meta: Any) -> None:
        """Publish progress for `kcw submit --wait` and other pollers."""
        if self.request.id and not self.request.called_directly:
            self.update_state(state="PROGRESS", meta=meta)
