"""`kcw.batch_line`: one line of a batch from the Batch API, run on the workers.

The logic is in `worker.batches.lines`; the task only connects it to this worker's
client, settings and Redis, and says whether this is the last allowed attempt.
"""

from __future__ import annotations

import threading
from typing import Any

import redis

from tasks.base import LLMTask
from worker.app import app
from worker.batches.lines import run_line
from worker.batches.runner import LINE_TASK
from worker.batches.store import BatchStore
from worker.runtime.process import job_context, worker_settings

__all__ = ["batch_line"]

_store: BatchStore | None = None
_lock = threading.Lock()


def line_store() -> BatchStore:
    """This process's connection to the batch state in Redis, made on first use."""
    global _store
    if _store is None:
        with _lock:
            if _store is None:
                _store = BatchStore(redis.Redis.from_url(worker_settings().redis_url))
    return _store


@app.task(bind=True, base=LLMTask, name=LINE_TASK, ignore_result=True)
def batch_line(self: LLMTask, message: dict[str, Any]) -> str:
    """One batch line: its outcome goes to the batch's results in Redis, once."""
    final = self.request.retries >= self.max_retries
    return run_line(line_store(), job_context(), message, final_attempt=final)
