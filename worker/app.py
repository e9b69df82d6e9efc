"""The Celery app, `worker.app:app`: `celery -A worker worker --loglevel=info` starts a worker.

Settings are read when Celery first needs its configuration, not at import, so
importing this module never touches the network or fails on a bad `.env`.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import (
    celeryd_init,
    worker_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from worker.config import Settings, get_settings
from worker.runtime import close_client

__all__ = ["QUEUE", "TASK_MODULES", "app", "celery_config"]

QUEUE = "kcw"
TASK_MODULES = ["tasks.chat", "tasks.summarize", "tasks.extract", "tasks.classify", "tasks.embed"]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings that follow the reliability contract (at-least-once, JSON only)."""
    visibility = settings.visibility_timeout
    transport = {
        "visibility_timeout": visibility,
        # Look for the jobs of a dead worker every 10 s at most (kombu's default looks every
        # 100 s), so they run again soon after the visibility timeout ends.
        "unacked_restore_interval": min(10, max(1, visibility // 10)),
        "unacked_restore_throttle": 1,
    }
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        # Pickle lets anyone who can write to Redis run code in the worker.
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        # Ack after the task ran; a worker lost mid-task gives the job back to the queue.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "result_expires": settings.result_expires,
        # A result written while Redis restarts waits for it (for a few minutes)
        # instead of failing the job that produced it.
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        "result_backend_max_sleep_between_retries_ms": 10_000,
        # No STARTED state and no copy of the job's input in its result: each costs a Redis
        # write per job (a third of the queue's overhead). Long jobs publish PROGRESS instead.
        "result_extended": False,
        "task_track_started": False,
        "task_default_queue": QUEUE,
        "worker_pool": settings.worker_pool,
        # 0 = sized to the LLM servers when the worker starts (see _size_pool below).
        "worker_concurrency": settings.worker_concurrency,
        # Monitoring events cost two Redis messages per job; `celery worker -E` turns them on.
        "worker_send_task_events": False,
        # A message the worker must drop (undecodable, or pickle) still gets a failed result.
        "worker_consumer": "worker.consumer:JobConsumer",
    }


app = Celery("kcw", include=TASK_MODULES)
app.add_defaults(lambda: celery_config(get_settings()))


log = logging.getLogger("kcw.worker")
# The plan made before the pool exists, reported once logging is set up.
_auto_concurrency: dict[str, Any] = {}


@celeryd_init.connect
def _plan_pool(options: dict[str, Any], **_: Any) -> None:
    """With no -c and WORKER_CONCURRENCY=0, size a threads pool to the servers' windows."""
    settings = get_settings()
    pool = str(options.get("pool_cls") or settings.worker_pool)
    if options.get("concurrency") or settings.worker_concurrency or "thread" not in pool:
        return
    from worker.capacity import plan_concurrency

    plan = plan_concurrency(settings)
    _auto_concurrency.update(threads=plan.threads, describe=plan.describe())


@worker_init.connect
def _size_pool(sender: Any, **_: Any) -> None:
    threads = _auto_concurrency.get("threads", 0)
    if threads:
        sender.concurrency = threads


@worker_ready.connect
def _report_pool(**_: Any) -> None:
    if "describe" in _auto_concurrency:
        log.info(
            "concurrency sized to the LLM servers: %s (set WORKER_CONCURRENCY to fix it)",
            _auto_concurrency["describe"],
        )


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_client(**_: Any) -> None:
    close_client()
