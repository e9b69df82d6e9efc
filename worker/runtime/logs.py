"""`LOG_FORMAT=json`: one JSON object per log line, with the job id and kind inside a job.

Log shippers (Loki, Elasticsearch, CloudWatch) read these without a parsing rule. Celery
sets up its own handlers; the worker swaps their formatter once they exist.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from celery._state import get_current_task

from worker.broker import job_kind

__all__ = ["JsonFormatter", "use_json_logs"]


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "job_id", "kind", ...}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        task = get_current_task()
        if task is not None and task.request.id:
            entry["job_id"] = task.request.id
            entry["kind"] = job_kind(str(task.name))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def use_json_logs(logger: logging.Logger) -> None:
    """Give every handler of `logger` the JSON formatter."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())
