"""Several LLM servers behind one client, the windows learned from them, and the pool size."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.unit.conftest import MODEL, FakeServer, chat_body, models_body
from worker.config import SettingsError, load_settings
from worker.errors import LLMServerDown
from worker.llm.capacity import plan_concurrency
from worker.llm.client import LLMClient

if TYPE_CHECKING:
    from tests.unit.conftest import SettingsFactory

A, B = "http://a.test:8000", "http://b.test:8001"


def by_host(**servers: FakeServer) -> httpx.MockTransport:
    """One transport for several fake servers, chosen by host name."""

    def handle(request: httpx.Request) -> httpx.Response:
        server = servers.get(request.url.host.split(".")[0])
        if server is None:
            raise httpx.ConnectError("connection refused", request=request)
        return server.handle(request)

    return httpx.MockTransport(handle)


def llama(slots: int | None, n_ctx: int = 4096, build: bool = True) -> FakeServer:
    server = FakeServer()
    server.reply("GET", "/v1/models", 200, models_body("llamacpp", MODEL, None))
    props: dict[str, object] = {"default_generation_settings": {"n_ctx": n_ctx}}
    if slots is not None:
        props["total_slots"] = slots
    if build:
        props["build_info"] = "b1-test"
    server.reply("GET", "/props", 200, props)
    server.reply("GET", "/health", 200, {"status": "ok"})
    return server


def client(
    make_settings: SettingsFactory,
    transport: httpx.MockTransport,
    sleeps: list[float],
    **kw: object,
) -> LLMClient:
    return LLMClient(
        make_settings(llm_server_url=f"{A},{B}", **kw), transport=transport, sleep=sleeps.append
    )


def test_a_refused_server_is_skipped_within_the_same_attempt(
    make_settings: SettingsFactory, sleeps: list[float]
) -> None:
    b = llama(4).answer("from b", "again b")
    llm = client(make_settings, by_host(b=b), sleeps)  # nothing answers on a.test

    assert llm.chat([{"role": "user", "content": "hi"}]).text == "from b"
    assert sleeps == []  # moved to b at once, no backoff
    a_endpoint, b_endpoint = llm.endpoints
    assert a_endpoint.down and not b_endpoint.down
    assert llm.chat([{"role": "user", "content": "hi"}]).text == "again b"
    llm.close()


def test_every_server_down_is_llm_server_down_after_the_retries(
    make_settings: SettingsFactory, sleeps: list[float]
) -> None:
    llm = client(make_settings, by_host(), sleeps, llm_retry_attempts=3)

    with pytest.raises(LLMServerDown, match="LLM_SERVER_URL"):
        llm.chat([{"role": "user", "content": "hi"}])
    assert len(sleeps) == 2
    llm.close()


def test_loading_server_is_skipped_and_comes_back_when_health_says_ok(
    make_settings: SettingsFactory, sleeps: list[float]
) -> None:
    a = llama(2)
    a.reply("POST", "/v1/chat/completions", 503, {"status": "loading"})
    b = llama(2).answer("b")
    llm = client(make_settings, by_host(a=a, b=b), sleeps, llm_health_interval=0.01)
    # Both idle: the first request goes to a, which is loading, and moves on to b.
    assert llm.chat([{"role": "user", "content": "x"}]).text == "b"
    assert llm.endpoints[0].down

    a.routes[("POST", "/v1/chat/completions")] = []
    a.answer("a is back")
    time.sleep(0.05)
    texts = {llm.chat([{"role": "user", "content": "x"}]).text for _ in range(3)}
    assert "a is back" in texts
    assert a.calls("GET", "/health")
    assert not llm.endpoints[0].down
    llm.close()


def test_windows_follow_the_slots_each_server_reports(
    make_settings: SettingsFactory, sleeps: list[float]
) -> None:
    llm = client(make_settings, by_host(a=llama(8), b=llama(None, build=False)), sleeps)
    for endpoint in llm.endpoints:
        llm.ensure_info(endpoint)
    # 8 slots plus a queue of 2; no slots said: LLM_MAX_INFLIGHT
    assert [ep.limit.limit for ep in llm.endpoints] == [10, 64]
    assert [ep.info.engine for ep in llm.endpoints if ep.info] == [
        "llama-server",
        "llama-cpp-python",
    ]
    llm.close()


def test_context_length_is_the_smallest_among_the_servers(
    make_settings: SettingsFactory, sleeps: list[float]
) -> None:
    llm = client(make_settings, by_host(a=llama(4, n_ctx=4096), b=llama(4, n_ctx=2048)), sleeps)
    for endpoint in llm.endpoints:
        llm.ensure_info(endpoint)
    assert llm.server_info().context_length == 2048
    llm.close()


def test_vllm_queueing_requests_shrinks_the_window(
    make_settings: SettingsFactory, sleeps: list[float]
) -> None:
    vllm = FakeServer()
    vllm.reply("GET", "/v1/models", 200, models_body("vllm", MODEL, 2048))
    vllm.reply("POST", "/v1/chat/completions", 200, chat_body("ok"))
    vllm.reply(
        "GET",
        "/metrics",
        200,
        text=(
            'vllm:num_requests_running{engine="0"} 12.0\n'
            'vllm:num_requests_waiting{engine="0"} 3.0\n'
        ),
    )
    llm = LLMClient(make_settings(), transport=vllm.transport, sleep=sleeps.append)
    llm.chat([{"role": "user", "content": "x"}])
    assert llm.endpoints[0].limit.limit == 12
    llm.chat([{"role": "user", "content": "x"}])
    assert len(vllm.calls("GET", "/metrics")) == 1  # looked at every few seconds, not per job
    llm.close()


def test_pool_size_is_the_sum_of_the_windows(make_settings: SettingsFactory) -> None:
    c = FakeServer()
    c.reply("GET", "/v1/models", 200, models_body("vllm", MODEL, 2048))
    settings = make_settings(llm_server_url=f"{A},{B},http://c.test:1,http://d.test:2")
    plan = plan_concurrency(
        settings, LLMClient(settings, transport=by_host(a=llama(8), b=llama(1), c=c))
    )
    assert plan.threads == 10 + 1 + (64 + 32) + 64
    assert [n for _, n, _ in plan.servers] == [10, 1, 64, 64]
    reasons = [why for _, _, why in plan.servers]
    assert reasons[0] == "8 slots + 2 queued"
    assert reasons[1] == "1 slot"
    assert "vllm batches" in reasons[2] and "32 waiting in the worker" in reasons[2]
    assert "not ready" in reasons[3]
    assert "http://d.test:2" in plan.describe()


@pytest.mark.parametrize(
    ("raw", "urls"),
    [
        ("http://a:1/v1/", ("http://a:1",)),
        ("http://a:1, http://b:2/v1", ("http://a:1", "http://b:2")),
        ("http://a:1 http://b:2", ("http://a:1", "http://b:2")),
    ],
)
def test_llm_server_url_takes_a_list(raw: str, urls: tuple[str, ...]) -> None:
    assert load_settings(_env_file=None, llm_server_url=raw).llm_server_urls == urls


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("http://a:1,http://a:1", "same server twice"),
        (" , ", "names no server"),
        ("http://a:1,b:2", "must start with http"),
    ],
)
def test_bad_server_lists_name_the_setting(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match="LLM_SERVER_URL") as caught:
        load_settings(_env_file=None, llm_server_url=raw)
    assert message in str(caught.value)


def test_llama_server_chat_model_embeddings_are_mean_pooled_token_vectors(
    make_settings: SettingsFactory, sleeps: list[float]
) -> None:
    server = llama(8)
    server.reply(
        "POST",
        "/v1/embeddings",
        400,
        {
            "error": {
                "code": 400,
                "message": "Pooling type 'none' is not OAI compatible. Please use a different "
                "pooling type",
                "type": "invalid_request_error",
            }
        },
    )
    server.reply("POST", "/embeddings", 200, [{"index": 0, "embedding": [[1.0, 2.0], [3.0, 4.0]]}])
    llm = LLMClient(make_settings(), transport=server.transport, sleep=sleeps.append)

    vectors, usage, model = llm.embed(["hello"])

    assert vectors == [[2.0, 3.0]]
    assert usage.prompt_tokens == 2
    assert model == MODEL
    assert server.bodies("POST", "/embeddings") == [{"input": ["hello"]}]
    llm.close()
