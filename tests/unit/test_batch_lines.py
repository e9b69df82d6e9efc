"""A batch line's request: passed through as written, with the LLM client's errors and retries."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.conftest import MODEL, ClientFactory, ServerFactory
from worker.batches.endpoints import execute, supported_endpoints
from worker.batches.lines import failure
from worker.errors import ContextLengthExceeded, LLMResponseInvalid, ModelNotFound
from worker.jobs.kind import JobContext

ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": MODEL,
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
}
BODY: dict[str, Any] = {
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 4,
    "logprobs": True,
}


def context(make_client: ClientFactory, server: Any) -> JobContext:
    client = make_client(server)
    return JobContext(client=client, settings=client.settings)


def test_the_body_goes_through_as_written_with_the_served_model(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server().reply("POST", "/v1/chat/completions", 200, ANSWER)

    outcome = execute(context(make_client, server), "/v1/chat/completions", BODY)

    assert server.bodies("POST", "/v1/chat/completions") == [{**BODY, "model": MODEL}]
    assert outcome["status_code"] == 200 and outcome["body"] == ANSWER
    assert (outcome["usage"]["prompt_tokens"], outcome["usage"]["completion_tokens"]) == (4, 1)


def test_a_model_the_server_does_not_serve_fails_without_a_call(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server().reply("POST", "/v1/chat/completions", 200, ANSWER)

    with pytest.raises(ModelNotFound, match="'gpt-4o' is not served here"):
        execute(context(make_client, server), "/v1/chat/completions", {**BODY, "model": "gpt-4o"})

    assert server.calls("POST", "/v1/chat/completions") == []


def test_a_server_rejection_becomes_our_error(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server().reply(
        "POST", "/v1/chat/completions", 400, {"error": {"message": "exceeds the context size"}}
    )

    with pytest.raises(ContextLengthExceeded) as caught:
        execute(context(make_client, server), "/v1/chat/completions", BODY)

    assert failure(caught.value)["status_code"] == 400
    assert failure(caught.value)["error"]["code"] == "ContextLengthExceeded"


def test_a_503_is_retried_by_the_client(
    make_server: ServerFactory, make_client: ClientFactory, sleeps: list[float]
) -> None:
    server = make_server()
    server.reply("POST", "/v1/chat/completions", 503, {"error": {"message": "busy"}})
    server.reply("POST", "/v1/chat/completions", 200, ANSWER)

    outcome = execute(context(make_client, server), "/v1/chat/completions", BODY)

    assert outcome["body"] == ANSWER
    assert len(server.calls("POST", "/v1/chat/completions")) == 2
    assert len(sleeps) == 1


def test_an_invalid_output_keeps_the_last_output() -> None:
    outcome = failure(LLMResponseInvalid("not one of the labels", "maybe"))

    assert outcome["status_code"] == 422
    assert outcome["error"]["last_output"] == "maybe"


def test_the_endpoints_are_openais_and_every_job_kind() -> None:
    endpoints = supported_endpoints()

    assert endpoints[:3] == ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
    assert {"/kcw/v1/summarize", "/kcw/v1/extract", "/kcw/v1/classify"} <= set(endpoints)
