"""The Celery app, `worker.app:app`: `celery -A worker worker --loglevel=info` starts a worker.

Settings are read when Celery first needs its configuration, not at import, so
importing this module never touches the network or fails on a bad `.env`.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_init,
    worker_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from worker.broker import QUEUE, celery_config, job_kind
from worker.metrics.endpoint import serve_metrics
from worker.metrics.series import declare, record_metrics, watch_servers
from worker.runtime import control
from worker.runtime.logs import use_json_logs
from worker.runtime.process import close_client, worker_settings

__all__ = ["QUEUE", "TASK_MODULES", "app", "celery_config"]

# The modules that define the tasks; each job kind has its task line in one of them.
TASK_MODULES = ["tasks.jobs", "tasks.summarize", "tasks.batches"]

app = Celery("kcw", include=TASK_MODULES)
app.add_defaults(lambda: celery_config(worker_settings()))

log = logging.getLogger("kcw.worker")
# The plan made before the pool exists, reported once logging is set up.
_auto_concurrency: dict[str, Any] = {}


@celeryd_init.connect
def _plan_pool(options: dict[str, Any], **_: Any) -> None:
    """With no -c and WORKER_CONCURRENCY=0, size a threads pool to the servers' windows."""
    settings = worker_settings()
    pool = str(options.get("pool_cls") or settings.worker_pool)
    if options.get("concurrency") or settings.worker_concurrency or "thread" not in pool:
        return
    from worker.llm.capacity import plan_concurrency

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


@worker_init.connect
def _metrics_switch(**_: Any) -> None:
    # Before the pool forks, so prefork children inherit it: WORKER_METRICS_PORT=0 records none.
    record_metrics(worker_settings().worker_metrics_port != 0)


@worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    settings = worker_settings()
    if settings.worker_metrics_port == 0:
        return
    ours = {name: task for name, task in app.tasks.items() if name.startswith("kcw.")}
    retried = {e.__name__ for task in ours.values() for e in getattr(task, "autoretry_for", ())}
    declare([job_kind(name) for name in ours], sorted(retried))
    watch_servers(control.server_states)
    serve_metrics(settings.worker_metrics_host, settings.worker_metrics_port)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger: logging.Logger, **_: Any) -> None:
    if worker_settings().log_format == "json":
        use_json_logs(logger)


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_client(**_: Any) -> None:
    close_client()
