"""One batch line inside a worker: run it once, and store its outcome once.

The line's job checks the batch before calling the model, so a cancelled batch
starts no more lines, and a line whose outcome is stored (or already in the files)
is not sent to the model again when its message is delivered twice.
"""

from __future__ import annotations

import logging
from typing import Any

from worker.batches.endpoints import execute
from worker.batches.store import BatchStore
from worker.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    JobTimedOut,
    LLMRateLimited,
    LLMRequestRejected,
    LLMResponseInvalid,
    LLMUnavailable,
    ModelNotFound,
)
from worker.jobs.kind import SHOWN_OUTPUT_CHARS, JobContext
from worker.metrics.series import BATCH_LINES, count

__all__ = ["failure", "run_line"]

log = logging.getLogger("kcw.batches")
JSON = dict[str, Any]

# The HTTP status a failed line reports for each of our errors (first match wins).
STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (ModelNotFound, 404),
    (AuthenticationFailed, 401),
    (ContextLengthExceeded, 400),
    (LLMRequestRejected, 400),
    (LLMResponseInvalid, 422),
    (LLMRateLimited, 429),
    (LLMUnavailable, 503),
    (JobTimedOut, 504),
)


def failure(exc: Exception) -> JSON:
    """A failed line's outcome: our error class and message, and its HTTP status."""
    status = next((code for cls, code in STATUS_OF if isinstance(exc, cls)), 500)
    error: JSON = {"code": type(exc).__name__, "message": str(exc)}
    last_output = getattr(exc, "last_output", None)
    if last_output:
        error["last_output"] = str(last_output)[:SHOWN_OUTPUT_CHARS]
    return {"status_code": status, "error": error}


def run_line(store: BatchStore, ctx: JobContext, message: JSON, final_attempt: bool) -> str:
    """Run one line if its batch still wants it; returns what happened, for the log."""
    batch_id, line = str(message["batch_id"]), int(message["line"])
    status = store.status(batch_id)
    if status != "in_progress":
        if status == "cancelling":
            store.record(batch_id, line, {"skipped": status})
        count(BATCH_LINES, "skipped")
        return f"skipped (batch {status or 'gone'})"
    if store.is_done(batch_id, line):
        count(BATCH_LINES, "skipped")
        return "skipped (already done)"
    try:
        outcome = execute(ctx, str(message["url"]), message["body"])
    except LLMUnavailable as exc:
        if not final_attempt:
            raise  # the task retries it later (Celery's autoretry)
        outcome = failure(exc)
    except Exception as exc:
        if not isinstance(exc, LLMRequestRejected | LLMResponseInvalid | JobTimedOut):
            log.warning("batch %s line %d failed: %r", batch_id, line, exc)
        outcome = failure(exc)
    stored = store.record(batch_id, line, outcome)
    if not stored:
        count(BATCH_LINES, "duplicate")
        return "done (an outcome was already stored)"
    count(BATCH_LINES, "failed" if "error" in outcome else "succeeded")
    return "done"
