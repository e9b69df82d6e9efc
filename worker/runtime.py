"""The worker process's one LLM client: created on first use, never at import time."""

from __future__ import annotations

import os
import threading

from worker.config import get_settings
from worker.llm_client import LLMClient

__all__ = ["close_client", "get_client"]

_client: LLMClient | None = None
_lock = threading.Lock()


def get_client() -> LLMClient:
    """The shared, pooled client of this process (threads share it; forks get their own)."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = LLMClient(get_settings())
    return _client


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
