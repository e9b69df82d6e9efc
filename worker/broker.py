"""The wire between submitters and workers: the queue, and Celery's settings for both sides.

Both the worker's app (`worker.app`) and every submitter (`worker.client`) are
configured here, so they agree on serialization, acknowledgement and timeouts.
"""

from __future__ import annotations

import time
from typing import Any

from celery.signals import before_task_publish
from redis.exceptions import OutOfMemoryError

from worker.config import WorkerSettings

__all__ = [
    "QUEUE",
    "SENT_AT_HEADER",
    "celery_config",
    "job_kind",
    "make_app",
    "queue_depth",
    "queue_full_message",
    "queue_keys",
    "refused_for_memory",
]

QUEUE = "kcw"
# kombu's Redis keys: one list per priority level of a queue, and the hash of the messages
# workers took and have not acknowledged yet.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED_KEY = "unacked"
# A message header: when the job was sent (epoch seconds), for the worker's queue-wait series.
SENT_AT_HEADER = "kcw_sent_at"
# kombu's Redis transport with a fetch that takes a job and records it in one step.
ATOMIC_FETCH_TRANSPORT = "worker.runtime.reliable_redis:Transport"
# Celery's Redis result backend with a result stored in one round trip.
RESULT_BACKEND = "worker.runtime.results:ResultBackend"
# Field names shown in a message's argument summary (`send_options`).
MAX_REPR_FIELDS = 12


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
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
        # By name, not by import: kombu loads it where a connection is made.
        "broker_transport": ATOMIC_FETCH_TRANSPORT if settings.redis_fetch == "atomic" else None,
        # By name too (`<class>+<url>`): Celery loads it when the app first needs it.
        "result_backend": f"{RESULT_BACKEND}+{settings.redis_url}",
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
        "worker_consumer": "worker.runtime.consumer:JobConsumer",
    }


def make_app(settings: WorkerSettings, main: str = "kcw-client") -> Any:
    """A Celery app for submitting jobs and reading results, configured like the workers."""
    from celery import Celery

    app = Celery(main)
    app.conf.update(celery_config(settings))
    return app


def send_options(payload: Any) -> dict[str, Any]:
    """`send_task` options that spare each message work it does not need here.

    Celery walks the arguments into a repr for monitoring (Flower): the payload's field
    names say what a job is without copying its prompt into the message a second time. kombu
    declares the queue before every publish: on Redis a queue is a list the push creates (the
    workers declare theirs when they start), so nothing is declared per message.
    """
    if isinstance(payload, dict):
        names = [f"{name!r}: …" for name in list(payload)[:MAX_REPR_FIELDS]]
        more = ", …" if len(payload) > MAX_REPR_FIELDS else ""
        argsrepr = f"({{{', '.join(names)}{more}}},)"
    else:
        argsrepr = f"({type(payload).__name__},)"
    return {"argsrepr": argsrepr, "kwargsrepr": "{}", "declare": []}


def close_app(app: Any) -> None:
    """Close a client app and its result backend's Redis connections.

    `Celery.close` only drops references, so the backend's sockets stay open until the
    garbage collector finds them (and warns of each). The broker's connection pool is
    shared by every app with the same URL and is left to kombu.
    """
    backend = app._backend
    if backend is not None:
        consumer = getattr(backend, "result_consumer", None)
        if consumer is not None:
            consumer.stop()
        client = backend.__dict__.get("client")  # a cached_property: set once used
        if client is not None:
            client.connection_pool.disconnect()
    app.close()


def queue_keys(queue: str = QUEUE) -> list[str]:
    """The Redis lists that hold `queue`'s messages, one per priority level."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def queue_depth(client: Any, queue: str = QUEUE) -> tuple[int, int]:
    """Jobs waiting in `queue` (every priority list), and jobs workers took and hold."""
    pipe = client.pipeline(transaction=False)
    for key in queue_keys(queue):
        pipe.llen(key)
    pipe.hlen(UNACKED_KEY)
    *lengths, unacked = pipe.execute()
    return int(sum(lengths)), int(unacked)


def job_kind(task_name: str) -> str:
    """The kind label of a task's metrics: `kcw.chat` -> `chat`."""
    return task_name.removeprefix("kcw.")


@before_task_publish.connect
def _stamp_sent_at(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Every process that sends jobs stamps them, so a worker can tell how long each waited."""
    if headers is not None:
        headers[SENT_AT_HEADER] = time.time()


def queue_full_message(exc: Exception) -> str:
    """What to tell a submitter whose job Redis refused for memory (maxmemory, noeviction)."""
    return (
        f"Redis refused the job: it is full ({exc}). Nothing already queued is lost "
        "(noeviction). Let the workers drain the queue, or raise REDIS_MEMORY_LIMIT in .env "
        "(REDIS_MAXMEMORY=auto follows it) or REDIS_MAXMEMORY itself"
    )


def refused_for_memory(exc: BaseException) -> bool:
    """True when Redis refused a write for memory: redis-py's error, or kombu's wrapping of it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OutOfMemoryError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
