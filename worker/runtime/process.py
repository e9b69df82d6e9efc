"""What one worker process holds: its settings and its LLM client, made on first use.

Nothing here touches the network at import time; a forked child makes its own client.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache

from worker.config import WorkerSettings, load_settings
from worker.jobs.kind import JobContext
from worker.llm.client import LLMClient

__all__ = ["close_client", "get_client", "job_context", "worker_settings"]

_client: LLMClient | None = None
_lock = threading.Lock()


@lru_cache(maxsize=1)
def worker_settings() -> WorkerSettings:
    """The worker's settings, read once per process from the environment and `.env`."""
    return load_settings(WorkerSettings)


def get_client() -> LLMClient:
    """The shared, pooled client of this process (threads share it; forks get their own)."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = LLMClient(worker_settings())
    return _client


def job_context() -> JobContext:
    """What a job runs with: this process's client and settings."""
    return JobContext(client=get_client(), settings=worker_settings())


def close_client() -> None:
    """Close the pool, e.g. when the worker shuts down."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
            _client = None


def _forget_after_fork() -> None:
    # A forked child must not reuse the parent's sockets.
    global _client
    _client = None


os.register_at_fork(after_in_child=_forget_after_fork)
