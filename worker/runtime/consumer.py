"""The worker's message consumer: a message it cannot read still ends its job as failed.

Celery logs and drops a message whose body does not decode (nested past the
recursion limit, say) or whose content type is refused (pickle); the job would stay
PENDING forever. Here the job id, which travels in the readable headers, gets a
FAILURE result that says why.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

from worker.broker import job_kind
from worker.errors import InvalidJobInput
from worker.metrics.series import JOBS_FAILED, count

__all__ = ["JobConsumer"]

log = logging.getLogger("kcw.worker")


class JobConsumer(Consumer):
    """Celery's consumer, storing a failed result for messages it has to drop."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        super().on_decode_error(message, exc)
        self._fail(message, f"its message could not be decoded ({type(exc).__name__}: {exc})")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        super().on_invalid_task(body, message, exc)
        self._fail(message, f"its message was refused ({exc}); kc-worker accepts JSON only")

    def _fail(self, message: Any, why: str) -> None:
        headers = getattr(message, "headers", None) or {}
        job_id, task = headers.get("id"), headers.get("task", "job")
        if not isinstance(job_id, str):
            return
        error = InvalidJobInput(f"Invalid input for {task}: {why[:500]}")
        count(JOBS_FAILED, job_kind(str(task)), type(error).__name__)
        try:
            self.app.backend.mark_as_failure(job_id, error)
        except Exception:  # the log line above already reports the message
            log.exception("could not store the failure of job %s", job_id)
