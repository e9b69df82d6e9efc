"""The Celery app, `worker.app:app`: `celery -A worker worker --loglevel=info` starts a worker.

Settings are read when Celery first needs its configuration, not at import, so
importing this module never touches the network or fails on a bad `.env`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_shutdown, worker_shutdown

from worker.config import Settings, get_settings
from worker.runtime import close_client

__all__ = ["QUEUE", "TASK_MODULES", "app", "celery_config"]

QUEUE = "kcw"
TASK_MODULES = ["tasks.chat", "tasks.summarize", "tasks.extract", "tasks.classify", "tasks.embed"]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings that follow the reliability contract (at-least-once, JSON only)."""
    transport = {"visibility_timeout": settings.visibility_timeout}
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
        "result_extended": True,
        "task_track_started": True,
        "task_default_queue": QUEUE,
        "worker_pool": settings.worker_pool,
        "worker_concurrency": settings.worker_concurrency,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
    }


app = Celery("kcw", include=TASK_MODULES)
app.add_defaults(lambda: celery_config(get_settings()))


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_client(**_: Any) -> None:
    close_client()
