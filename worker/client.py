"""The submitting side: send a job by kind, then read its state, progress and result.

Every caller (`kcw`, the demo, the test harness, the fault tier, the bench and the
HTTP API) submits through `JobClient` and reads through `Job`, instead of writing
`send_task` plus a polling loop again.

    client = JobClient(settings)
    job = client.submit("chat", {"messages": [{"role": "user", "content": "Hi"}]})
    job.wait(timeout=60)
    print(job.result()["text"])
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.broker import (
    close_app,
    make_app,
    queue_full_message,
    refused_for_memory,
    send_options,
)
from worker.config import WorkerSettings
from worker.errors import JobWaitTimedOut, KcwError, LLMError, QueueFull
from worker.jobs import registry
from worker.jobs.kind import task_name

__all__ = ["FINISHED", "Job", "JobClient", "Progress"]

JSON = dict[str, Any]
# States after which a job's result no longer changes.
FINISHED = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
# States of a job that is queued or running.
UNFINISHED = frozenset({"PENDING", "STARTED", "PROGRESS", "RETRY"})


@dataclass(frozen=True)
class Progress:
    """What a long job published about itself: its stage and, for a chord, parts done."""

    stage: str
    done: int | None = None
    total: int | None = None

    def __str__(self) -> str:
        if self.total is None:
            return self.stage
        return f"{self.stage}: {self.done}/{self.total} done"


class Job:
    """One submitted job, read from the result backend on each call."""

    def __init__(self, result: Any, kind: str | None = None) -> None:
        self._result = result
        self.kind = kind

    @property
    def id(self) -> str:
        return str(self._result.id)

    @property
    def async_result(self) -> Any:
        """Celery's AsyncResult, for callers that need Celery itself."""
        return self._result

    def status(self) -> str:
        """Celery's state: PENDING, PROGRESS, RETRY, SUCCESS, FAILURE, ..."""
        return str(self._result.state)

    def ready(self) -> bool:
        return bool(self._result.ready())

    def info(self) -> Any:
        """What the backend holds beside the state: progress, the retry's error, the result."""
        return self._result.info

    def progress(self) -> Progress | None:
        """The published progress of a running job (chunks done of a long summary)."""
        if self._result.state != "PROGRESS":
            return None
        info = self._result.info
        if not isinstance(info, dict):
            return None
        ids = info.get("chunk_ids") or []
        stage = str(info.get("stage", ""))
        if not ids:
            return Progress(stage)
        app = self._result.app
        done = sum(1 for cid in ids if app.AsyncResult(cid).ready())
        return Progress(stage, done, len(ids))

    def describe(self) -> str:
        """The state in words, with progress when there is some (for live views)."""
        state = self.status().lower()
        progress = self.progress()
        return f"{state}  {progress}" if progress else state

    def wait(
        self,
        timeout: float,
        *,
        poll: float = 0.25,
        on_tick: Callable[[float, str], None] | None = None,
    ) -> Job:
        """Poll until the job ends; `on_tick(elapsed, describe())` runs on every poll.

        Raises `JobWaitTimedOut` when it has not ended after `timeout` seconds.
        """
        started = time.monotonic()
        while not self.ready():
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                raise JobWaitTimedOut(
                    f"job {self.id} is still {self.status().lower()} after {timeout:g}s; "
                    f"check later with `kcw result {self.id}`"
                )
            if on_tick is not None:
                on_tick(elapsed, self.describe())
            time.sleep(poll)
        return self

    def error(self) -> BaseException | None:
        """The exception a failed job ended with, as the worker raised it; None otherwise."""
        if self._result.state != "FAILURE":
            return None
        exc = self._result.result
        return exc if isinstance(exc, BaseException) else LLMError(str(exc))

    def result(self) -> JSON:
        """The result of a job that succeeded.

        A failed job raises its error: ours as it is, anything else as `LLMError`.
        """
        state = self._result.state
        if state == "SUCCESS":
            value = self._result.result
            return value if isinstance(value, dict) else {"value": value}
        error = self.error()
        if isinstance(error, KcwError):
            raise error
        if error is not None:
            raise LLMError(f"{type(error).__name__}: {error}") from error
        raise JobWaitTimedOut(f"job {self.id} has not ended: it is {state.lower()}")


class JobClient:
    """Submits jobs to the workers' queue and finds them again by id."""

    def __init__(self, settings: WorkerSettings | None = None, *, app: Any = None) -> None:
        if app is None and settings is None:
            raise ValueError("JobClient needs settings or a Celery app")
        self.app = app if app is not None else make_app(settings)  # type: ignore[arg-type]
        self._own_app = app is None

    def submit(self, kind: str, payload: Any) -> Job:
        """Queue a job of a registered kind; the worker validates the payload."""
        registry.get(kind)  # an unknown kind is a usage error, before anything is sent
        return self.send(task_name(kind), payload, kind=kind)

    def send(self, name: str, payload: Any, *, kind: str | None = None) -> Job:
        """Queue a payload under any task name, registered or not (the wire format)."""
        try:
            return Job(self.app.send_task(name, args=[payload], **send_options(payload)), kind)
        except Exception as exc:
            if refused_for_memory(exc):
                raise QueueFull(queue_full_message(exc)) from None
            raise

    def job(self, job_id: str) -> Job:
        """The job with this id (PENDING when unknown, queued, or expired)."""
        return Job(self.app.AsyncResult(job_id))

    def close(self) -> None:
        if self._own_app:
            close_app(self.app)

    def __enter__(self) -> JobClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
