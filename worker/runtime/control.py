"""`kcw_stats`: a Celery remote-control command that `kcw top` sends to every worker.

It answers from memory (this process's running and finished jobs, its pool, and its view of
each LLM server), so a worker needs no extra port to be watched.
"""

from __future__ import annotations

import os
from typing import Any

from celery.worker.control import inspect_command

from worker.metrics.recent import RATE_WINDOW_S, RECENT
from worker.metrics.series import ServerState

__all__ = ["STATS_COMMAND", "server_states", "stats"]

STATS_COMMAND = "kcw_stats"


def server_states() -> list[ServerState]:
    """Each LLM server as this process's client sees it (made on first use)."""
    from worker.runtime.process import get_client

    return [
        ServerState(e.url, e.limit.limit, e.in_flight, not e.down) for e in get_client().endpoints
    ]


def stats(pool_size: int) -> dict[str, Any]:
    """What `kcw_stats` answers."""
    return {
        "pid": os.getpid(),
        "pool": pool_size,
        "running": RECENT.running,
        "finished": RECENT.finished,
        "jobs_per_s": round(RECENT.rate(), 3),
        "rate_window_s": RATE_WINDOW_S,
        "servers": [
            {"url": s.url, "window": s.window, "in_flight": s.in_flight, "healthy": s.healthy}
            for s in server_states()
        ],
    }


@inspect_command(name=STATS_COMMAND)
def kcw_stats(state: Any, **_: Any) -> dict[str, Any]:
    """Jobs running and finished, jobs/s, pool size and LLM server windows of this worker."""
    pool = getattr(state.consumer, "pool", None)
    size = getattr(pool, "num_processes", None) or getattr(
        state.consumer.controller, "concurrency", 0
    )
    return stats(int(size or 0))
