"""The LLM client and its one error boundary, against a fake server in memory."""

from __future__ import annotations

import email.utils
import math
import time
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

from tests.unit.conftest import MODEL, FakeServer, chat_body, models_body
from worker import deadline
from worker.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    JobTimedOut,
    LLMError,
    LLMRateLimited,
    LLMRequestRejected,
    LLMServerDown,
    LLMUnavailable,
    ModelNotFound,
)
from worker.llm.http_errors import error_from_response, translate_error
from worker.llm.parsing import parse_completion
from worker.llm.types import Usage

if TYPE_CHECKING:
    from tests.unit.conftest import ClientFactory, ServerFactory

URL = "http://llm.test:8000"
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]

# What llama-cpp-python 0.3 answers when the prompt is too long (HTTP 400).
LLAMACPP_CONTEXT_ERROR = {
    "error": {
        "message": (
            "This model's maximum context length is 2048 tokens. However, you requested "
            "2100 tokens (2000 in the messages, 100 in the completion). Please reduce the "
            "length of the messages or completion."
        ),
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
# What vLLM answers for the same (flat OpenAI-ish error object).
VLLM_CONTEXT_ERROR = {
    "object": "error",
    "message": (
        "This model's maximum context length is 2048 tokens. However, you requested 4000 tokens."
    ),
    "type": "BadRequestError",
    "param": None,
    "code": 400,
}
# What llama.cpp's llama-server answers (HTTP 400, exceed_context_size_error).
LLAMA_SERVER_CONTEXT_ERROR = {
    "error": {
        "code": 400,
        "message": (
            "request (5000 tokens) exceeds the available context size (4096 tokens), "
            "try increasing it"
        ),
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 5000,
        "n_ctx": 4096,
    }
}
VLLM_MODEL_ERROR = {
    "object": "error",
    "message": "The model `gpt-4` does not exist.",
    "type": "NotFoundError",
    "param": None,
    "code": 404,
}


def response(
    status: int,
    body: object = None,
    *,
    text: str | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    path: str = CHAT,
) -> httpx.Response:
    request = httpx.Request(method, f"{URL}{path}")
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


# --- error_from_response: HTTP status and body to the error tree -----------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_names_llm_api_key(status: int) -> None:
    error = error_from_response(response(status, {"detail": "Invalid API key"}), URL)

    assert type(error) is AuthenticationFailed
    assert "LLM_API_KEY" in str(error)
    assert f"HTTP {status}" in str(error)
    assert URL in str(error)


def test_429_is_rate_limited_with_retry_after_seconds() -> None:
    error = error_from_response(
        response(429, {"error": {"message": "too many"}}, headers={"Retry-After": "7"}), URL
    )

    assert type(error) is LLMRateLimited
    assert error.retry_after == 7.0
    assert "HTTP 429" in str(error)
    assert "too many" in str(error)


def test_429_reads_retry_after_as_an_http_date() -> None:
    later = email.utils.formatdate(time.time() + 60, usegmt=True)

    error = error_from_response(response(429, {}, headers={"Retry-After": later}), URL)

    assert isinstance(error, LLMRateLimited)
    assert error.retry_after is not None
    assert 55.0 <= error.retry_after <= 60.5


def test_retry_after_date_in_the_past_means_no_wait() -> None:
    error = error_from_response(
        response(429, {}, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), URL
    )

    assert isinstance(error, LLMRateLimited)
    assert error.retry_after == 0.0


def test_429_without_retry_after_leaves_the_wait_to_backoff() -> None:
    error = error_from_response(response(429, {}), URL)

    assert isinstance(error, LLMRateLimited)
    assert error.retry_after is None


def test_unparseable_retry_after_is_ignored() -> None:
    error = error_from_response(response(503, {}, headers={"Retry-After": "soon"}), URL)

    assert type(error) is LLMServerDown
    assert error.retry_after is None


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_and_unavailable_statuses_are_retryable(status: int) -> None:
    error = error_from_response(response(status, text="Bad Gateway"), URL)

    assert type(error) is LLMServerDown
    assert f"is unavailable (HTTP {status})" in str(error)
    assert f"curl {URL}/health" in str(error)


def test_503_while_loading_says_the_model_is_loading() -> None:
    error = error_from_response(
        response(503, {"status": "loading"}, headers={"Retry-After": "2"}), URL
    )

    assert type(error) is LLMServerDown
    assert "is still loading its model" in str(error)
    assert error.retry_after == 2.0


@pytest.mark.parametrize(
    "body",
    [LLAMACPP_CONTEXT_ERROR, LLAMA_SERVER_CONTEXT_ERROR, VLLM_CONTEXT_ERROR],
    ids=["llama-cpp-python", "llama-server", "vllm"],
)
def test_400_for_a_too_long_prompt_is_context_length_exceeded(body: dict[str, Any]) -> None:
    error = error_from_response(response(400, body), URL)
    message = body["error"]["message"] if "error" in body else body["message"]

    assert type(error) is ContextLengthExceeded
    assert message in str(error)
    assert "N_CTX" in str(error)


def test_413_is_context_length_exceeded() -> None:
    error = error_from_response(response(413, text="Request Entity Too Large"), URL)

    assert type(error) is ContextLengthExceeded


def test_404_about_the_model_is_model_not_found() -> None:
    error = error_from_response(response(404, VLLM_MODEL_ERROR), URL)

    assert type(error) is ModelNotFound
    assert "The model `gpt-4` does not exist." in str(error)
    assert "LLM_MODEL" in str(error)


def test_404_for_a_route_names_the_url_and_backend_settings() -> None:
    error = error_from_response(response(404, {"detail": "Not Found"}, path="/tokenize"), URL)

    assert type(error) is LLMRequestRejected
    assert "POST /tokenize is not served" in str(error)
    assert "LLM_SERVER_URL" in str(error)
    assert "LLM_BACKEND" in str(error)


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [
        (400, {"error": {"message": "temperature must be <= 2"}}, "temperature must be <= 2"),
        (422, {"detail": "field required"}, "field required"),
        (500, None, "Internal Server Error"),
    ],
)
def test_other_errors_are_rejected_with_the_server_message(
    status: int, body: object, detail: str
) -> None:
    res = response(status, body) if body else response(status, text=detail)

    error = error_from_response(res, URL)

    assert type(error) is LLMRequestRejected
    assert f"POST {CHAT} (HTTP {status})" in str(error)
    assert detail in str(error)


# --- translate_error: httpx and openai exceptions --------------------------------------------


def test_connection_refused_is_unavailable_naming_llm_server_url() -> None:
    exc = httpx.ConnectError("[Errno 111] Connection refused")

    error = translate_error(exc, URL, 120.0)

    assert type(error) is LLMServerDown
    assert "LLM_SERVER_URL" in str(error)
    assert URL in str(error)
    assert "ConnectError" in str(error)


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("timed out"),
        openai.APITimeoutError(httpx.Request("POST", f"{URL}{CHAT}")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_timeouts_are_unavailable_naming_llm_timeout(exc: Exception) -> None:
    error = translate_error(exc, URL, 45.5)

    assert type(error) is LLMUnavailable
    assert "LLM_TIMEOUT=45.5s" in str(error)


def test_connect_timeout_means_the_server_is_down() -> None:
    error = translate_error(httpx.ConnectTimeout("timed out"), URL, 45.5)

    assert type(error) is LLMServerDown
    assert "LLM_SERVER_URL" in str(error)


def test_sdk_connection_error_is_unavailable() -> None:
    exc = openai.APIConnectionError(request=httpx.Request("POST", f"{URL}{CHAT}"))

    error = translate_error(exc, URL, 120.0)

    assert type(error) is LLMServerDown
    assert "LLM_SERVER_URL" in str(error)


def test_sdk_status_error_is_mapped_by_status() -> None:
    res = response(401, {"error": {"message": "bad key"}})
    exc = openai.AuthenticationError("bad key", response=res, body=None)

    assert type(translate_error(exc, URL, 120.0)) is AuthenticationFailed


def test_httpx_status_error_is_mapped_by_status() -> None:
    res = response(429, {}, headers={"Retry-After": "3"})
    exc = httpx.HTTPStatusError("429", request=res.request, response=res)

    error = translate_error(exc, URL, 120.0)

    assert isinstance(error, LLMRateLimited)
    assert error.retry_after == 3.0


def test_our_errors_pass_the_boundary_unchanged() -> None:
    original = ModelNotFound("no such model")

    assert translate_error(original, URL, 120.0) is original


def test_malformed_answer_is_rejected_not_crashing() -> None:
    error = translate_error(KeyError("choices"), URL, 120.0)

    assert type(error) is LLMRequestRejected
    assert "Unexpected answer from the LLM server" in str(error)


def test_unknown_exceptions_are_not_swallowed() -> None:
    with pytest.raises(RuntimeError, match="bug"):
        translate_error(RuntimeError("bug"), URL, 120.0)


# --- server_info ------------------------------------------------------------------------------


def test_llamacpp_is_detected_and_context_read_from_props(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp", model="smollm2", n_ctx=4096)

    info = make_client(server).server_info()

    assert info.backend == "llamacpp"
    assert info.model == "smollm2"
    assert info.models == ("smollm2",)
    assert info.context_length == 4096
    assert info.engine == "llama-cpp-python"
    assert info.profile.tokenize_path(info.engine) == "/extras/tokenize"
    assert len(server.calls("GET", "/props")) == 1


def test_vllm_is_detected_and_context_read_from_max_model_len(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("vllm", model="HuggingFaceTB/SmolLM2-135M-Instruct", max_model_len=8192)

    info = make_client(server).server_info()

    assert info.backend == "vllm"
    assert info.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert info.context_length == 8192
    assert server.calls("GET", "/props") == []


def test_llamacpp_without_props_has_unknown_context(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp", n_ctx=None)

    assert make_client(server).server_info().context_length is None


def test_llm_context_length_setting_wins_over_the_server(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp", n_ctx=4096)

    info = make_client(server, llm_context_length=1024).server_info()

    assert info.context_length == 1024


def test_llm_backend_setting_overrides_detection(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp")

    assert make_client(server, llm_backend="vllm").server_info().backend == "vllm"


def test_model_not_served_lists_the_served_ids(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("vllm", model="served-model")

    with pytest.raises(ModelNotFound) as caught:
        make_client(server, llm_model="gpt-4").server_info()

    assert "LLM_MODEL='gpt-4'" in str(caught.value)
    assert "it serves: served-model" in str(caught.value)


def test_llm_model_picks_one_of_several_served_models(
    fake_server: FakeServer, make_client: ClientFactory
) -> None:
    server = fake_server.reply(
        "GET",
        "/v1/models",
        200,
        {
            "data": [
                {"id": "a", "owned_by": "vllm"},
                {"id": "b", "owned_by": "vllm", "max_model_len": 512},
            ]
        },
    )

    info = make_client(server, llm_model="b").server_info()

    assert (info.model, info.models, info.context_length) == ("b", ("a", "b"), 512)


def test_server_without_models_is_model_not_found(
    fake_server: FakeServer, make_client: ClientFactory
) -> None:
    server = fake_server.reply("GET", "/v1/models", 200, {"object": "list", "data": []})

    with pytest.raises(ModelNotFound, match="lists no models"):
        make_client(server).server_info()


def test_server_info_is_asked_once_and_cached(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp").answer("one", "two")
    client = make_client(server)

    client.chat(HI)
    client.chat(HI)

    assert len(server.calls("GET", "/v1/models")) == 1
    client.server_info(refresh=True)
    assert len(server.calls("GET", "/v1/models")) == 2


def test_models_list_is_retried_while_the_server_loads(
    make_server: ServerFactory, make_client: ClientFactory, sleeps: list[float]
) -> None:
    server = make_server("llamacpp")
    server.reply(
        "GET", "/v1/models", 503, {"status": "loading"}, headers={"Retry-After": "1"}, first=True
    )

    assert make_client(server).server_info().model == "smollm2"
    assert len(server.calls("GET", "/v1/models")) == 2
    assert sleeps == [1.0]


def test_models_list_refusing_the_key_is_authentication_failed(
    fake_server: FakeServer,
    make_client: ClientFactory,
) -> None:
    server = fake_server.reply("GET", "/v1/models", 401, {"detail": "Invalid API key"})

    with pytest.raises(AuthenticationFailed, match="LLM_API_KEY"):
        make_client(server).server_info()
    assert len(server.calls("GET", "/v1/models")) == 1


@pytest.mark.parametrize(
    ("body", "text", "escaping"),
    [
        (None, "<html>proxy page</html>", ValueError),
        (["not", "an", "object"], None, AttributeError),
    ],
    ids=["html", "json-list"],
)
def test_unusable_props_answer_never_crosses_the_boundary_raw(
    make_server: ServerFactory,
    make_client: ClientFactory,
    body: object,
    text: str | None,
    escaping: type[Exception],
) -> None:
    server = make_server("llamacpp", n_ctx=None).reply("GET", "/props", 200, body, text=text)

    try:
        info = make_client(server).server_info()
    except LLMError:
        return  # reported through the error tree: fine
    assert info.context_length is None  # or ignored like a missing /props: fine too


# --- chat -------------------------------------------------------------------------------------


def test_chat_returns_text_finish_reason_and_usage(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp").answer(
        "Hello there.", finish_reason="length", prompt_tokens=12, completion_tokens=3
    )

    completion = make_client(server).chat(HI, max_tokens=3, temperature=0.5, seed=7)

    assert completion.text == "Hello there."
    assert completion.finish_reason == "length"
    assert completion.model == "smollm2"
    usage = completion.usage.as_dict()
    assert 0 < usage.pop("llm_seconds") < 5
    assert usage == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    [body] = server.bodies("POST", CHAT)
    assert body["model"] == "smollm2"
    assert body["messages"] == HI
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (3, 0.5, 7)
    assert "top_p" not in body
    assert "stop" not in body


def test_chat_sends_the_api_key_everywhere(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp").answer("ok")

    make_client(server, llm_api_key="sk-test-123").chat(HI)

    assert [r.headers.get("authorization") for r in server.requests] == [
        "Bearer sk-test-123"
    ] * 3  # /v1/models, /props, /v1/chat/completions


def test_a_cookie_one_reply_sets_never_rides_on_a_later_request(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp")
    server.reply("POST", CHAT, 200, chat_body("one"), headers={"set-cookie": "session=abc"})
    server.answer("two")
    client = make_client(server)

    client.chat(HI)
    client.chat(HI)

    assert [r.headers.get("cookie") for r in server.calls("POST", CHAT)] == [None, None]


def test_a_server_url_with_a_path_keeps_it_for_the_chat_route(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = FakeServer()
    server.reply("GET", "/llm/v1/models", 200, models_body("vllm", MODEL, 2048))
    server.reply("POST", "/llm/v1/chat/completions", 200, chat_body("routed"))

    completion = make_client(server, llm_server_url="http://gpu1:8000/llm/").chat(HI)

    assert completion.text == "routed"
    assert [r.url.path for r in server.calls("POST", "/llm/v1/chat/completions")] == [
        "/llm/v1/chat/completions"
    ]
    assert server.calls("POST", CHAT) == []


def test_without_api_key_the_raw_routes_send_no_authorization(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp")

    make_client(server).server_info()

    assert all("authorization" not in r.headers for r in server.requests)


def test_chat_retries_a_503_then_succeeds(
    make_server: ServerFactory, make_client: ClientFactory, sleeps: list[float]
) -> None:
    server = make_server("llamacpp")
    server.reply("POST", CHAT, 503, {"error": {"message": "busy"}}, headers={"Retry-After": "2"})
    server.reply("POST", CHAT, 503, {"status": "loading"})
    server.answer("finally")

    completion = make_client(server).chat(HI)

    assert completion.text == "finally"
    assert len(server.calls("POST", CHAT)) == 3
    assert len(sleeps) == 2
    assert sleeps[0] == 2.0
    assert 0.0 <= sleeps[1] <= 1.0  # jittered backoff, second attempt: at most 0.5 * 2


def test_chat_honours_retry_after_on_429(
    make_server: ServerFactory, make_client: ClientFactory, sleeps: list[float]
) -> None:
    server = make_server("llamacpp")
    server.reply("POST", CHAT, 429, {"error": {"message": "slow"}}, headers={"Retry-After": "4"})
    server.answer("ok")

    assert make_client(server).chat(HI).text == "ok"
    assert sleeps == [4.0]


def test_chat_caps_retry_after_at_llm_retry_max_wait(
    make_server: ServerFactory, make_client: ClientFactory, sleeps: list[float]
) -> None:
    server = make_server("llamacpp")
    server.reply("POST", CHAT, 429, {}, headers={"Retry-After": "600"})
    server.answer("ok")

    make_client(server, llm_retry_max_wait=5.0).chat(HI)

    assert sleeps == [5.0]


@pytest.mark.parametrize("attempts", [1, 3, 5])
def test_sdk_retries_are_off_so_n_attempts_send_n_requests(
    make_server: ServerFactory, make_client: ClientFactory, sleeps: list[float], attempts: int
) -> None:
    server = make_server("llamacpp")
    server.reply(
        "POST", CHAT, 503, {"error": {"message": "overloaded"}}, headers={"Retry-After": "0"}
    )

    with pytest.raises(LLMUnavailable, match="HTTP 503"):
        make_client(server, llm_retry_attempts=attempts).chat(HI)

    assert len(server.calls("POST", CHAT)) == attempts
    assert sleeps == [0.0] * (attempts - 1)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"error": {"message": "bad request"}}, LLMRequestRejected),
        (400, LLAMACPP_CONTEXT_ERROR, ContextLengthExceeded),
        (401, {"detail": "Invalid API key"}, AuthenticationFailed),
        (404, VLLM_MODEL_ERROR, ModelNotFound),
        (500, {"error": {"message": "boom"}}, LLMRequestRejected),
    ],
)
def test_rejected_requests_are_sent_exactly_once(
    make_server: ServerFactory,
    make_client: ClientFactory,
    sleeps: list[float],
    status: int,
    body: object,
    error: type[LLMError],
) -> None:
    server = make_server("llamacpp").reply("POST", CHAT, status, body)

    with pytest.raises(error) as caught:
        make_client(server).chat(HI)

    assert type(caught.value) is error
    assert len(server.calls("POST", CHAT)) == 1
    assert sleeps == []


def test_connection_refused_is_retried_then_unavailable(
    make_server: ServerFactory, make_client: ClientFactory, sleeps: list[float]
) -> None:
    server = make_server("llamacpp").fail("POST", CHAT, httpx.ConnectError)

    with pytest.raises(LLMUnavailable, match="LLM_SERVER_URL") as caught:
        make_client(server, llm_retry_attempts=3).chat(HI)

    assert "Cannot reach the LLM server at http://llm.test:8000" in str(caught.value)
    assert len(server.calls("POST", CHAT)) == 3
    assert len(sleeps) == 2


def test_server_down_on_first_contact_is_unavailable(
    fake_server: FakeServer, make_client: ClientFactory, sleeps: list[float]
) -> None:
    server = fake_server.fail("GET", "/v1/models", httpx.ConnectError)

    with pytest.raises(LLMUnavailable, match="LLM_SERVER_URL"):
        make_client(server, llm_retry_attempts=2).server_info()
    assert len(sleeps) == 1


def test_read_timeout_is_unavailable_naming_llm_timeout(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp").fail("POST", CHAT, httpx.ReadTimeout)

    with pytest.raises(LLMUnavailable, match=r"LLM_TIMEOUT=30s"):
        make_client(server, llm_timeout=30, llm_retry_attempts=2).chat(HI)
    assert len(server.calls("POST", CHAT)) == 2


def test_completion_without_choices_is_rejected(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp").reply(
        "POST",
        CHAT,
        200,
        {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []},
    )

    with pytest.raises(LLMRequestRejected, match="no choices"):
        make_client(server).chat(HI)


def test_503_with_unparseable_retry_after_is_still_retried(
    make_server: ServerFactory, make_client: ClientFactory, sleeps: list[float]
) -> None:
    server = make_server("llamacpp")
    server.reply("POST", CHAT, 503, {"error": {"message": "busy"}}, headers={"Retry-After": "soon"})
    server.answer("ok")

    assert make_client(server).chat(HI).text == "ok"
    assert len(sleeps) == 1


def test_nan_retry_after_gives_a_finite_wait(
    make_server: ServerFactory, make_client: ClientFactory, sleeps: list[float]
) -> None:
    server = make_server("llamacpp")
    server.reply("POST", CHAT, 503, {"error": {"message": "busy"}}, headers={"Retry-After": "nan"})
    server.answer("ok")

    make_client(server).chat(HI)

    assert len(sleeps) == 1
    assert math.isfinite(sleeps[0])
    assert 0.0 <= sleeps[0] <= 30.0


# --- count_tokens -----------------------------------------------------------------------------


def test_count_tokens_on_llamacpp_uses_extras_tokenize(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp").reply(
        "POST", "/extras/tokenize", 200, {"tokens": [1, 2, 3, 4]}
    )

    assert make_client(server).count_tokens("four tokens here ok") == 4
    assert server.bodies("POST", "/extras/tokenize") == [
        {"model": "smollm2", "input": "four tokens here ok"}
    ]


def test_count_tokens_reads_a_count_field(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp").reply("POST", "/extras/tokenize", 200, {"count": 11})

    assert make_client(server).count_tokens("text") == 11


def test_count_tokens_on_vllm_uses_tokenize(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("vllm", model="m").reply(
        "POST", "/tokenize", 200, {"count": 7, "max_model_len": 2048, "tokens": [0] * 7}
    )

    assert make_client(server).count_tokens("seven") == 7
    assert server.bodies("POST", "/tokenize") == [
        {"model": "m", "prompt": "seven", "add_special_tokens": False}
    ]
    assert server.calls("POST", "/extras/tokenize") == []


@pytest.mark.parametrize("backend", ["llamacpp", "vllm"])
def test_count_tokens_is_none_when_the_server_has_no_tokenizer_route(
    make_server: ServerFactory, make_client: ClientFactory, backend: str
) -> None:
    server = make_server(backend)  # unrouted paths answer 404

    assert make_client(server).count_tokens("text") is None


def test_tokenize_answer_that_is_not_an_object_is_reported_as_an_llm_error(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp").reply("POST", "/extras/tokenize", 200, [1, 2, 3])

    with pytest.raises(LLMError):
        make_client(server).count_tokens("text")


def test_count_tokens_errors_are_translated(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp").reply("POST", "/extras/tokenize", 401, {"detail": "no"})

    with pytest.raises(AuthenticationFailed):
        make_client(server).count_tokens("text")


# --- health -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "state"),
    [
        (200, {"status": "ok"}, "ready"),
        (503, {"status": "loading"}, "loading"),
        (503, {"status": "error", "detail": "model failed to load"}, "failed"),
        (500, {"detail": "boom"}, "failed"),
    ],
)
def test_health_maps_the_answer_to_a_state(
    fake_server: FakeServer, make_client: ClientFactory, status: int, body: object, state: str
) -> None:
    server = fake_server.reply("GET", "/health", status, body)

    report = make_client(server).health()

    assert report.state == state
    assert report.status_code == status


def test_vllm_health_with_empty_body_is_ready(
    fake_server: FakeServer, make_client: ClientFactory
) -> None:
    server = fake_server.reply("GET", "/health", 200, text="")

    report = make_client(server, llm_backend="vllm").health()

    assert (report.state, report.detail) == ("ready", "ok")


def test_health_of_a_closed_port_is_unreachable(
    fake_server: FakeServer, make_client: ClientFactory, sleeps: list[float]
) -> None:
    server = fake_server.fail("GET", "/health", httpx.ConnectError)

    report = make_client(server).health()

    assert report.state == "unreachable"
    assert report.status_code is None
    assert "ConnectError" in report.detail
    assert len(server.requests) == 1  # one probe, no retries
    assert sleeps == []


# --- embed and usage --------------------------------------------------------------------------


def test_embed_returns_vectors_in_input_order(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("vllm").reply(
        "POST",
        "/v1/embeddings",
        200,
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]},
                {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
            ],
            "model": "smollm2",
            "usage": {"prompt_tokens": 6, "total_tokens": 6},
        },
    )

    vectors, usage, model = make_client(server).embed(["first", "second"])

    assert vectors == [[0.1, 0.2], [0.3, 0.4]]
    assert usage.prompt_tokens == 6
    assert model == "smollm2"
    [body] = server.bodies("POST", "/v1/embeddings")
    assert body["input"] == ["first", "second"]


def test_llamacpp_embeds_one_input_per_request_and_pools_token_vectors(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp")
    for tokens in ([[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0]]):
        server.reply(
            "POST",
            "/v1/embeddings",
            200,
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": tokens}],
                "model": "smollm2",
                "usage": {"prompt_tokens": len(tokens), "total_tokens": len(tokens)},
            },
        )

    vectors, usage, _ = make_client(server).embed(["two tokens", "one"])

    assert vectors == [[2.0, 3.0], [5.0, 6.0]]
    assert usage.prompt_tokens == 3
    assert [b["input"] for b in server.bodies("POST", "/v1/embeddings")] == [
        ["two tokens"],
        ["one"],
    ]


def test_usage_adds_up() -> None:
    total = Usage(10, 2, 0.25).add(Usage(5, 1, 0.5))

    assert total.as_dict() == {
        "prompt_tokens": 15,
        "completion_tokens": 3,
        "total_tokens": 18,
        "llm_seconds": 0.75,
    }
    assert Usage.from_dict(total.as_dict()) == total
    assert Usage.from_dict({"prompt_tokens": 1}) == Usage(1, 0, 0.0)


def test_vllm_metrics_are_read_from_prometheus_text() -> None:
    from worker.llm.parsing import parse_vllm_metrics

    text = "\n".join(
        [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            'vllm:num_requests_running{engine="0",model_name="m"} 8.0',
            'vllm:num_requests_waiting{engine="0",model_name="m"} 2.0',
            'vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 2.0',
            'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25',
            "process_cpu_seconds_total 12.5",
        ]
    )
    assert parse_vllm_metrics(text) == {"running": 8.0, "waiting": 2.0, "kv_cache_usage": 0.25}
    assert parse_vllm_metrics("") == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "not an object"),
        ({"choices": []}, "no choices"),
        ({"choices": ["x"]}, "no choices"),
        ({"choices": [{"finish_reason": "stop"}]}, "no message"),
        ({"choices": [{"message": {"content": 3}}]}, "content is a int"),
    ],
)
def test_odd_completion_bodies_are_clear_errors(body: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_completion(body, "m")


def test_completion_without_usage_or_model_keeps_what_it_knows() -> None:
    done = parse_completion({"choices": [{"message": {"content": None}}]}, "m")
    assert (done.text, done.finish_reason, done.model, done.usage.total_tokens) == (
        "",
        "stop",
        "m",
        0,
    )


def test_each_request_timeout_is_capped_by_the_jobs_time_left(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp")
    server.answer("ok")
    client = make_client(server, llm_timeout=120)

    client.chat(HI)
    with deadline.job_deadline(3, 10):
        client.chat(HI)

    first, second = (r.extensions["timeout"]["read"] for r in server.calls("POST", CHAT))
    assert first == 120
    assert 2 < second <= 3


def test_a_job_out_of_time_stops_retrying_with_job_timed_out(
    make_server: ServerFactory, make_client: ClientFactory, sleeps: list[float]
) -> None:
    server = make_server("llamacpp").fail("POST", CHAT, httpx.ReadTimeout)
    client = make_client(server, llm_retry_attempts=20)
    client.server_info()

    with deadline.job_deadline(0.3, 10), pytest.raises(JobTimedOut, match="TASK_TIME_LIMIT"):
        # The fake clock does not advance, so each retry's sleep is real here.
        client._sleep = time.sleep
        client.chat(HI)
    assert 1 <= len(server.calls("POST", CHAT)) < 20
