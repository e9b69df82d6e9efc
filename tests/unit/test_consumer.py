"""The worker's consumer: a message it has to drop still ends its job as FAILURE.

The consumer is built without a worker or a connection; its app is a Celery app whose
result backend lives in memory, and messages are stand-ins with the parts Celery reads.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from worker.errors import InvalidJobInput
from worker.runtime.consumer import JobConsumer


class Message:
    """The parts of a kombu message that the consumer reads, recording ack and reject."""

    def __init__(self, headers: dict[str, Any] | None) -> None:
        self.headers = headers
        self.body = b"\x80\x04not json"
        self.content_type = "application/x-python-serialize"
        self.content_encoding = "binary"
        self.acked = False
        self.rejected = False

    def ack(self) -> None:
        self.acked = True

    def reject_log_error(self, logger: logging.Logger, errors: tuple[type[Exception], ...]) -> None:
        self.rejected = True


class RecordingBackend:
    """A result backend that records each write, or fails it like a lost Redis."""

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.failures: list[tuple[str, Exception]] = []

    def mark_as_failure(self, task_id: str, exc: Exception) -> None:
        self.failures.append((task_id, exc))
        if self.broken:
            raise ConnectionError("Redis went away")


class RecordingApp:
    def __init__(self, broken: bool = False) -> None:
        self.backend = RecordingBackend(broken)


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("t", broker="memory://", backend="cache+memory://", set_as_current=False)
    yield app
    app.close()


def consumer_for(app: Any) -> JobConsumer:
    """A consumer that was never started: no worker, no connection."""
    consumer = JobConsumer.__new__(JobConsumer)
    consumer.app = app
    consumer.connection_errors = ()  # type: ignore[attr-defined]  # set by __init__
    return consumer


def stored_error(app: Celery, job_id: str) -> Any:
    result = app.AsyncResult(job_id)
    assert result.state == "FAILURE"
    return result.result


def test_fail_stores_invalid_input_naming_the_task_and_the_reason(app: Celery) -> None:
    job_id = uuid.uuid4().hex
    message = Message({"id": job_id, "task": "kcw.chat"})

    consumer_for(app)._fail(message, "its message was refused (pickle)")

    error = stored_error(app, job_id)
    assert isinstance(error, InvalidJobInput)
    assert str(error) == "Invalid input for kcw.chat: its message was refused (pickle)"


def test_fail_without_a_task_name_says_job(app: Celery) -> None:
    job_id = uuid.uuid4().hex

    consumer_for(app)._fail(Message({"id": job_id}), "no reason")

    assert str(stored_error(app, job_id)) == "Invalid input for job: no reason"


def test_fail_keeps_only_the_start_of_a_long_reason(app: Celery) -> None:
    job_id = uuid.uuid4().hex

    consumer_for(app)._fail(Message({"id": job_id, "task": "kcw.embed"}), "x" * 5000)

    assert str(stored_error(app, job_id)) == "Invalid input for kcw.embed: " + "x" * 500


@pytest.mark.parametrize(
    "headers", [None, {}, {"task": "kcw.chat"}, {"id": 42, "task": "kcw.chat"}], ids=repr
)
def test_fail_ignores_a_message_without_a_string_id(
    headers: dict[str, Any] | None, caplog: pytest.LogCaptureFixture
) -> None:
    app = RecordingApp()

    consumer_for(app)._fail(Message(headers), "unreadable")

    assert app.backend.failures == []
    assert caplog.records == []


def test_fail_logs_when_the_backend_cannot_store_the_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = RecordingApp(broken=True)

    with caplog.at_level(logging.ERROR, logger="kcw.worker"):
        consumer_for(app)._fail(Message({"id": "job-1", "task": "kcw.chat"}), "why")

    assert [task_id for task_id, _ in app.backend.failures] == ["job-1"]

    [record] = [r for r in caplog.records if r.name == "kcw.worker"]
    assert record.getMessage() == "could not store the failure of job job-1"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ConnectionError)


def test_an_undecodable_message_is_acked_and_its_job_failed(
    app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = uuid.uuid4().hex
    message = Message({"id": job_id, "task": "kcw.summarize"})

    with caplog.at_level(logging.CRITICAL, logger="celery.worker.consumer.consumer"):
        consumer_for(app).on_decode_error(message, RecursionError("too deep"))

    assert message.acked
    assert str(stored_error(app, job_id)) == (
        "Invalid input for kcw.summarize: its message could not be decoded "
        "(RecursionError: too deep)"
    )


def test_a_refused_message_is_rejected_and_its_job_failed(
    app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = uuid.uuid4().hex
    message = Message({"id": job_id, "task": "kcw.chat"})

    with caplog.at_level(logging.CRITICAL, logger="celery.worker.consumer.consumer"):
        consumer_for(app).on_invalid_task(None, message, ValueError("pickle is refused"))

    assert message.rejected
    assert str(stored_error(app, job_id)) == (
        "Invalid input for kcw.chat: its message was refused (pickle is refused); "
        "kc-worker accepts JSON only"
    )
