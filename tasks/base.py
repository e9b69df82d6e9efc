"""The base class of every kc-worker task: what is retried, what is not, what never runs twice."""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Task, states
from celery.exceptions import Ignore, Retry, TaskPredicate

from worker import deadline, tracing
from worker.broker import SENT_AT_HEADER, job_kind
from worker.errors import (
    JobTimedOut,
    LLMRateLimited,
    LLMRequestRejected,
    LLMResponseInvalid,
    LLMUnavailable,
)
from worker.metrics.meter import metered_job
from worker.metrics.series import JOBS_REDELIVERED, JOBS_SKIPPED, count
from worker.runtime.process import worker_settings

__all__ = ["LLMTask", "equal_jitter"]

log = logging.getLogger("kcw.tasks")


def equal_jitter(countdown: float, draw: float) -> float:
    """Half the countdown plus a random share of the other half (`draw` in [0, 1]).

    Spreads retries out like full jitter, but a job always waits at least half of each
    backoff, so TASK_MAX_RETRIES outlasts a server outage of known length.
    """
    return countdown / 2 + draw * countdown / 2


class LLMTask(Task):  # type: ignore[type-arg]
    """Retries while the server is down (minutes, with backoff); fails bad input at once."""

    # Seconds-scale retries already happened inside the client; these are the minutes scale.
    autoretry_for = (LLMUnavailable, LLMRateLimited)
    retry_backoff = 5
    retry_jitter = False  # `retry` below applies equal jitter instead of Celery's full jitter
    # Expected failures: logged without a traceback, never retried.
    throws = (LLMRequestRejected, LLMResponseInvalid, JobTimedOut)

    @property
    def max_retries(self) -> int:  # type: ignore[override]
        return worker_settings().task_max_retries

    @property
    def retry_backoff_max(self) -> int:
        return worker_settings().task_retry_backoff_max

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly:
            return super().__call__(*args, **kwargs)
        kind = job_kind(self.name)
        if (request.delivery_info or {}).get("redelivered"):
            count(JOBS_REDELIVERED, kind)
            if self._finished_before():
                # The worker that ran it died after storing the result but before
                # acknowledging the message. Running it again would replace a result a
                # client may have read.
                log.info("job %s was delivered again but already has a result: skipped", request.id)
                count(JOBS_SKIPPED, kind)
                raise Ignore()
        settings = worker_settings()
        stamp = getattr(request, SENT_AT_HEADER, None)
        # The queue wait of the first run only: a retry waited for its countdown.
        sent_at = float(stamp) if isinstance(stamp, int | float) and not request.retries else None
        with (
            deadline.job_deadline(settings.task_soft_time_limit, settings.task_time_limit),
            tracing.running_job(str(request.id)),
            metered_job(kind, sent_at) as meter,
        ):
            try:
                result = super().__call__(*args, **kwargs)
            except Retry as exc:
                meter.retried(exc.exc if isinstance(exc.exc, Exception) else exc)
                raise
            except TaskPredicate:
                raise  # replaced by a chord (summarize), or ignored: the job goes on elsewhere
            except Exception as exc:
                meter.failed(exc)
                raise
            meter.succeeded()
            return result

    def _finished_before(self) -> bool:
        meta = self.backend.get_task_meta(str(self.request.id))
        return meta.get("status") in states.READY_STATES

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("countdown"):
            kwargs["countdown"] = equal_jitter(kwargs["countdown"], random.random())
        return super().retry(*args, **kwargs)

    def progress(self, **meta: Any) -> None:
        """Publish progress for `kcw submit --wait` and other pollers."""
        if self.request.id and not self.request.called_directly:
            self.update_state(state="PROGRESS", meta=meta)
