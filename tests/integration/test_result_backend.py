"""Our result backend against a real Redis: one script stores, expires and publishes a result,
and a stored SUCCESS is never replaced (what Celery's own backend checks with a GET first)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.processes import RELIABLE_FETCH_DB, RedisServer, client_app
from worker.broker import close_app
from worker.runtime.results import ResultBackend


@pytest.fixture
def backend(redis_server: RedisServer) -> Iterator[Any]:
    app = client_app(redis_server, RELIABLE_FETCH_DB)  # a db no worker reads
    app.conf.result_expires = 600
    backend = app.backend
    assert isinstance(backend, ResultBackend)
    backend.client.flushdb()
    yield backend
    backend.client.flushdb()
    close_app(app)


def stored(backend: Any, task_id: str) -> dict[str, Any]:
    return json.loads(backend.client.get(backend.get_key_for_task(task_id)))  # type: ignore[no-any-return]


def test_a_result_is_stored_with_its_expiry_and_published(backend: Any) -> None:
    key = backend.get_key_for_task("job-1")
    pubsub = backend.client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(key)
    try:
        backend.store_result("job-1", {"text": "hi"}, "SUCCESS")
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
    finally:
        pubsub.close()
    meta = stored(backend, "job-1")
    assert meta["status"] == "SUCCESS" and meta["result"] == {"text": "hi"}
    assert meta["task_id"] == "job-1"
    assert message is not None and json.loads(message["data"]) == meta
    assert 590 <= backend.client.ttl(key) <= 600
    assert backend.get_task_meta("job-1")["result"] == {"text": "hi"}  # Celery reads it back


def test_a_stored_success_is_never_replaced_and_anything_else_is(backend: Any) -> None:
    backend.store_result("job-2", {"state": "halfway"}, "PROGRESS")
    backend.store_result("job-2", {"text": "first"}, "SUCCESS")
    assert stored(backend, "job-2")["result"] == {"text": "first"}
    # A second run of the same job (delivered twice) ends later: the first SUCCESS stays.
    backend.store_result("job-2", {"text": "second"}, "SUCCESS")
    backend.store_result("job-2", {"exc_type": "LLMServerDown", "exc_message": ["x"]}, "FAILURE")
    meta = stored(backend, "job-2")
    assert meta["status"] == "SUCCESS" and meta["result"] == {"text": "first"}


def test_a_failure_keeps_its_own_expiry(backend: Any) -> None:
    backend.failure_expires = 60
    backend.store_result("job-3", {"exc_type": "X", "exc_message": ["y"]}, "FAILURE")
    assert 50 <= backend.client.ttl(backend.get_key_for_task("job-3")) <= 60


def test_a_success_the_script_cannot_decode_is_still_kept(backend: Any) -> None:
    key = backend.get_key_for_task("job-4")
    raw = '{"status": "SUCCESS", "result": "\\ud800", "task_id": "job-4"}'  # cjson refuses it
    backend.client.set(key, raw)
    backend.store_result("job-4", {"text": "again"}, "SUCCESS")
    assert backend.client.get(key).decode() == raw
