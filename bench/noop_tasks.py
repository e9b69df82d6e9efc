"""A bench-only Celery app with one no-op task, configured like the real worker.

    celery -A bench.noop_tasks worker

It reads the same settings (REDIS_*, WORKER_*) as `worker.app`, so the only difference from
our pipeline is the task body: `bench.noop` returns at once without calling any server.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from worker.broker import celery_config
from worker.runtime.process import worker_settings

app = Celery("kcw-bench-noop")
app.add_defaults(lambda: celery_config(worker_settings()))


@app.task(name="bench.noop")
def noop(payload: dict[str, Any]) -> dict[str, Any]:
    """Return a tiny result shaped like a chat result, without doing any work."""
    return {"text": "", "usage": {"prompt_tokens": 0, "completion_tokens": 0}}
