"""The Celery task of each job kind that runs in one step: one line per kind.

Each task validates the payload with its kind's input model and runs the kind's
run function with this worker's client and settings; the logic is in `worker.jobs`.
"""

from __future__ import annotations

from typing import Any

from tasks.base import LLMTask
from worker.app import app
from worker.jobs import registry
from worker.runtime.process import job_context

__all__ = ["chat", "classify", "embed", "extract", "job_task"]


def job_task(kind_name: str) -> Any:
    """Register the task `kcw.<kind>` that runs the registered kind `kind_name`."""
    kind = registry.get(kind_name)

    def run(self: LLMTask, payload: dict[str, Any]) -> Any:
        return kind.run(job_context(), kind.parse(payload))

    run.__name__ = run.__qualname__ = kind.name
    run.__doc__ = f"`{kind.task_name}`: {kind.help}."
    return app.task(bind=True, base=LLMTask, name=kind.task_name)(run)


chat = job_task("chat")
extract = job_task("extract")
classify = job_task("classify")
embed = job_task("embed")
