"""Which job, and which run of it, an LLM request belongs to: sent as request headers.

The task sets the running job's id and a fresh execution id for its thread; the LLM
client adds both to every request (`X-Request-Id`, which vLLM and most proxies log, and
`X-Kcw-Execution`). A server log or a counting proxy can then tell a job that called the
model twice (run again after a crash) from one whose request was retried.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["EXECUTION_HEADER", "REQUEST_ID_HEADER", "headers", "running_job"]

REQUEST_ID_HEADER = "X-Request-Id"
EXECUTION_HEADER = "X-Kcw-Execution"

_current: ContextVar[tuple[str, str] | None] = ContextVar("kcw_running_job", default=None)


@contextmanager
def running_job(job_id: str) -> Iterator[str]:
    """Mark the code inside as one execution of `job_id`; yields the execution id."""
    execution = uuid.uuid4().hex[:16]
    token = _current.set((job_id, execution))
    try:
        yield execution
    finally:
        _current.reset(token)


def headers() -> dict[str, str]:
    """The headers for a request made now: empty outside a job."""
    current = _current.get()
    if current is None:
        return {}
    job_id, execution = current
    return {REQUEST_ID_HEADER: job_id, EXECUTION_HEADER: execution}
