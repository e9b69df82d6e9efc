"""One snapshot of the whole system for `kcw top`: queue, workers, LLM servers, batches.

The queue and batches are read from Redis; the workers answer the `kcw_stats`
remote-control command. Every figure is what the source says now; nothing is estimated
except a batch's ETA (its remaining lines at the rate it has run so far).
"""

from __future__ import annotations

import time
from typing import Any

import redis

from worker.batches.records import BatchRecord
from worker.batches.store import BatchStore
from worker.broker import QUEUE, make_app, queue_depth
from worker.config import WorkerSettings
from worker.ops.health import redis_client
from worker.runtime.control import STATS_COMMAND

__all__ = ["batch_progress", "snapshot"]

JSON = dict[str, Any]


def snapshot(settings: WorkerSettings, timeout: float = 1.0) -> JSON:
    """Everything `kcw top` shows, as JSON-ready data."""
    client = redis_client(settings)
    try:
        queue = _queue(client)
        batches = _batches(BatchStore(client))
    finally:
        client.close()
    workers = _workers(settings, timeout)
    return {
        "time": round(time.time(), 3),
        "queue": queue,
        "workers": workers,
        "servers": _servers(workers),
        "batches": batches,
    }


def _queue(client: redis.Redis) -> JSON:
    waiting, unacked = queue_depth(client)
    return {"name": QUEUE, "waiting": waiting, "unacked": unacked}


def _workers(settings: WorkerSettings, timeout: float) -> list[JSON]:
    app = make_app(settings, main="kcw-top")
    try:
        replies = app.control.broadcast(STATS_COMMAND, reply=True, timeout=timeout) or []
    finally:
        app.close()
    workers = []
    for reply in replies:
        for name, stats in reply.items():
            if isinstance(stats, dict) and "pool" in stats:
                workers.append({"name": name, **stats})
    return sorted(workers, key=lambda w: str(w["name"]))


def _servers(workers: list[JSON]) -> list[JSON]:
    """Each LLM server over all workers: summed windows and in flight; healthy if all say so."""
    merged: dict[str, JSON] = {}
    for worker in workers:
        for server in worker.get("servers", []):
            row = merged.setdefault(
                server["url"], {"url": server["url"], "window": 0, "in_flight": 0, "healthy": True}
            )
            row["window"] += int(server["window"])
            row["in_flight"] += int(server["in_flight"])
            row["healthy"] = row["healthy"] and bool(server["healthy"])
    return [merged[url] for url in sorted(merged)]


def _batches(store: BatchStore) -> list[JSON]:
    now = time.time()
    return [batch_progress(record, now) for record in store.active_records()]


def batch_progress(record: BatchRecord, now: float) -> JSON:
    """A running batch's counts, share done, lines/s so far and ETA in seconds (None if unknown)."""
    counts = record.request_counts
    done = counts.completed + counts.failed
    started = record.in_progress_at or record.created_at
    elapsed = max(0.0, now - started)
    rate = done / elapsed if elapsed > 0 and done else 0.0
    remaining = max(0, counts.total - done)
    return {
        "id": record.id,
        "status": record.status,
        "endpoint": record.endpoint,
        "total": counts.total,
        "completed": counts.completed,
        "failed": counts.failed,
        "done_share": round(done / counts.total, 4) if counts.total else 0.0,
        "lines_per_s": round(rate, 3),
        "eta_s": round(remaining / rate, 1) if rate > 0 else None,
    }
