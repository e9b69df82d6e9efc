"""Bad input through the real worker: each ends as a failed job that names the problem, at once.

None is retried, the worker survives every one, and the next good job succeeds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.processes import Worker, submitter

Submit = Callable[..., Any]

MESSAGE = [{"role": "user", "content": "hi"}]

BAD_INPUTS = [
    pytest.param(
        "extract",
        {"text": "Ann is 3.", "schema": "{not json"},
        "InvalidJobInput",
        "schema is not valid JSON",
        id="extract-non-json-schema",
    ),
    pytest.param(
        "extract",
        {"text": "Ann is 3.", "schema": {"type": 12}},
        "InvalidJobInput",
        "not a valid JSON Schema",
        id="extract-invalid-json-schema",
    ),
    pytest.param(
        "extract",
        {"text": "Ann is 3.", "schema": "[1, 2]"},
        "InvalidJobInput",
        "schema must be a JSON object",
        id="extract-schema-not-an-object",
    ),
    pytest.param(
        "chat",
        {"messages": []},
        "InvalidJobInput",
        "messages: List should have at least 1 item",
        id="chat-empty-messages",
    ),
    pytest.param(
        "chat",
        {"messages": "hello"},
        "InvalidJobInput",
        "messages: Input should be a valid list",
        id="chat-messages-wrong-type",
    ),
    pytest.param(
        "chat",
        {"messages": MESSAGE, "max_tokens": "10"},
        "InvalidJobInput",
        "max_tokens: Input should be a valid integer",
        id="chat-max-tokens-wrong-type",
    ),
    pytest.param(
        "chat",
        {"messages": [{"role": "wizard", "content": "hi"}]},
        "InvalidJobInput",
        "messages.0.role",
        id="chat-unknown-role",
    ),
    pytest.param(
        "chat",
        {"messages": MESSAGE, "temprature": 0.5},
        "InvalidJobInput",
        "temprature: Extra inputs are not permitted",
        id="chat-misspelled-field",
    ),
    pytest.param(
        "chat",
        ["not", "an", "object"],
        "InvalidJobInput",
        "expected a JSON object, got list",
        id="chat-payload-not-an-object",
    ),
    pytest.param(
        "classify",
        {
            "text": "x",
            "labels": ["a", "b"],
            "examples": [{"text": "y", "label": "c"}],
        },
        "InvalidJobInput",
        "unknown labels ['c']",
        id="classify-unknown-label-in-examples",
    ),
    pytest.param(
        "classify",
        {"text": "x", "labels": ["spam"]},
        "InvalidJobInput",
        "labels: List should have at least 2 items",
        id="classify-one-label",
    ),
    pytest.param(
        "classify",
        {"text": "x", "labels": ["a", "a", "b"]},
        "InvalidJobInput",
        "labels repeat: a",
        id="classify-duplicate-labels",
    ),
    pytest.param(
        "summarize",
        {"text": "   "},
        "InvalidJobInput",
        "text: text is blank",
        id="summarize-blank-text",
    ),
    pytest.param(
        "embed",
        {"texts": 42},
        "InvalidJobInput",
        "texts: Input should be a valid list",
        id="embed-wrong-type",
    ),
    pytest.param(
        "chat",
        {"messages": [{"role": "user", "content": "word " * 6000}], "max_tokens": 64},
        "ContextLengthExceeded",
        "raise N_CTX",
        id="chat-prompt-over-context",
    ),
    pytest.param(
        "extract",
        {"text": "word " * 6000, "schema": {"type": "object"}},
        "ContextLengthExceeded",
        "raise N_CTX",
        id="extract-text-over-context",
    ),
]


@pytest.fixture()
def submit(backend_submit: Submit) -> Submit:
    """Bad input goes to every real server's worker: both llama.cpp engines and vLLM."""
    return backend_submit


@pytest.fixture()
def job_worker(backend_worker: tuple[Worker, Submit]) -> Worker:
    """The worker process behind `submit`, to check it survives."""
    return backend_worker[0]


@pytest.mark.parametrize(("kind", "payload", "error", "says"), BAD_INPUTS)
def test_bad_input_fails_at_once_with_a_clear_error(
    submit: Submit, job_worker: Worker, kind: str, payload: Any, error: str, says: str
) -> None:
    started = time.monotonic()
    job = submit(kind, payload, timeout=60)
    elapsed = time.monotonic() - started

    assert job.failed(), job.result
    assert type(job.result).__name__ == error
    assert says in str(job.result)
    # Celery logs "Task kcw.<kind>[<id>] retry: Retry in Ns" before each retry.
    retried = f"[{job.id}] retry:" in job_worker.output()
    assert not retried, "bad input must never be retried"
    assert elapsed < 30
    assert job_worker.alive()


def test_worker_still_serves_after_bad_input(submit: Submit, job_worker: Worker) -> None:
    for payload in ({"messages": []}, {"messages": 5}, {"bogus": True}):
        assert submit("chat", payload).failed()
    job = submit("chat", {"messages": MESSAGE, "max_tokens": 8})
    assert job.successful(), job.result
    assert job_worker.alive()
    assert "Retry in" not in job_worker.output()


def test_unknown_task_name_fails_at_once_and_the_worker_goes_on(
    celery_app: Any, worker: Worker
) -> None:
    job = celery_app.send_task("kcw.no-such-task", args=[{"text": "hi"}])
    with contextlib.suppress(Exception):
        job.get(timeout=30)
    assert job.state == "FAILURE"
    assert type(job.result).__name__ == "NotRegistered"
    assert "kcw.no-such-task" in str(job.result)
    assert worker.alive()
    good = submitter(celery_app)("chat", {"messages": [{"role": "user", "content": "hi"}]})
    assert good.successful(), good.result
