"""`kcw serve`'s `/metrics`: the queue read from Redis, and the unfinished batches' progress.

Read at each scrape, so every `kcw serve` reports the same figures; series carry no batch
ids (a label per batch would grow without bound). No key is needed, as for `/health`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import redis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.batches.store import BatchStore
from worker.broker import QUEUE, queue_depth

__all__ = ["ServeCollector", "render", "serve_registry"]

ACTIVE_STATUSES = ("validating", "in_progress", "finalizing", "cancelling")


class ServeCollector(Collector):
    """Queue depth, jobs held by workers, and the unfinished batches, read from Redis."""

    def __init__(self, store: BatchStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("kcw_redis_up", "1 when this scrape could read Redis, else 0.")
        try:
            figures = self._read()
        except redis.RedisError:
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from figures

    def _read(self) -> list[Metric]:
        waiting, unacked = queue_depth(self.store.redis)
        queue = GaugeMetricFamily(
            "kcw_queue_length", "Jobs waiting in the Redis queue.", labels=["queue"]
        )
        queue.add_metric([QUEUE], float(waiting))
        held = GaugeMetricFamily(
            "kcw_jobs_unacked", "Jobs taken by a worker and not yet acknowledged (running)."
        )
        held.add_metric([], float(unacked))
        statuses: Counter[str] = Counter()
        lines: Counter[str] = Counter()
        for record in self.store.active_records():
            statuses[record.status] += 1
            counts = record.request_counts
            lines["total"] += counts.total
            lines["completed"] += counts.completed
            lines["failed"] += counts.failed
        batches = GaugeMetricFamily(
            "kcw_batches", "Unfinished batches by status.", labels=["status"]
        )
        for status in ACTIVE_STATUSES:
            batches.add_metric([status], float(statuses[status]))
        requests = GaugeMetricFamily(
            "kcw_batch_requests",
            "Lines of the unfinished batches: total, completed and failed.",
            labels=["state"],
        )
        for state in ("total", "completed", "failed"):
            requests.add_metric([state], float(lines[state]))
        return [queue, held, batches, requests]


def serve_registry(store: BatchStore) -> CollectorRegistry:
    """The registry of one `kcw serve` app: its own process, the queue and the batches."""
    registry = CollectorRegistry()
    registry.register(ServeCollector(store))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text a scrape gets, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
