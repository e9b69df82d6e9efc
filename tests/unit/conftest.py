"""Fixtures for the unit tier: settings without `.env`, and an LLM server in memory.

Nothing here opens a socket. The fake server is an `httpx.MockTransport` handler
that routes by method and path and records every request, so tests can count
calls and read the bodies the client really sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from worker.config import Settings, load_settings
from worker.llm.client import LLMClient

JSON = dict[str, Any]
Reply = Callable[[httpx.Request], httpx.Response]
SettingsFactory = Callable[..., Settings]
ServerFactory = Callable[..., "FakeServer"]
ClientFactory = Callable[..., LLMClient]

SERVER_URL = "http://llm.test:8000"
MODEL = "smollm2"


@pytest.fixture(autouse=True)
def _no_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's exported LLM_* or REDIS_* variables must not change any test."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_settings() -> SettingsFactory:
    """Settings from keyword overrides only (no `.env`), pointed at the fake server."""

    def make(**overrides: Any) -> Settings:
        overrides.setdefault("llm_server_url", SERVER_URL)
        return load_settings(_env_file=None, **overrides)

    return make


class FakeServer:
    """An OpenAI-compatible server in memory, answering from per-route reply queues.

    Each route holds a queue of replies; a request takes the next one, and the
    last one keeps answering once the queue is down to it. Unknown routes answer
    404 like FastAPI does.
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[httpx.Request] = []

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(404, json={"detail": "Not Found"})
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return answer(request)

    def add(self, method: str, path: str, answer: Reply, *, first: bool = False) -> FakeServer:
        """Queue `answer` last, or ahead of the replies already queued when `first`."""
        queue = self.routes.setdefault((method.upper(), path), [])
        queue.insert(0 if first else len(queue), answer)
        return self

    def reply(
        self,
        method: str,
        path: str,
        status: int = 200,
        body: Any = None,
        *,
        text: str | None = None,
        headers: dict[str, str] | None = None,
        first: bool = False,
    ) -> FakeServer:
        """Queue one answer with a JSON `body` (or plain `text`)."""

        def answer(_: httpx.Request) -> httpx.Response:
            if text is not None:
                return httpx.Response(status, text=text, headers=headers)
            return httpx.Response(status, json=body, headers=headers)

        return self.add(method, path, answer, first=first)

    def fail(self, method: str, path: str, error: type[httpx.TransportError]) -> FakeServer:
        """Queue a transport failure (refused connection, timeout) instead of an answer."""

        def answer(request: httpx.Request) -> httpx.Response:
            raise error(f"fake {error.__name__}", request=request)

        return self.add(method, path, answer)

    def answer(
        self,
        *texts: str,
        finish_reason: str = "stop",
        prompt_tokens: int = 10,
        completion_tokens: int = 5,
    ) -> FakeServer:
        """Queue one chat completion per text."""
        for text in texts:
            self.reply(
                "POST",
                "/v1/chat/completions",
                200,
                chat_body(text, finish_reason, prompt_tokens, completion_tokens),
            )
        return self

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method.upper() and r.url.path == path]

    def bodies(self, method: str, path: str) -> list[JSON]:
        """The JSON bodies sent to one route, in order."""
        return [json.loads(r.content) for r in self.calls(method, path)]


def chat_body(
    text: str, finish_reason: str = "stop", prompt_tokens: int = 10, completion_tokens: int = 5
) -> JSON:
    """A chat completion as llama-cpp-python and vLLM send it."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def models_body(backend: str, model: str, max_model_len: int | None) -> JSON:
    """`/v1/models` as llama-cpp-python (`owned_by: me`) or vLLM (`owned_by: vllm`) sends it."""
    if backend == "vllm":
        entry: JSON = {
            "id": model,
            "object": "model",
            "created": 1700000000,
            "owned_by": "vllm",
            "root": model,
            "parent": None,
            "max_model_len": max_model_len,
            "permission": [],
        }
    else:
        entry = {"id": model, "object": "model", "owned_by": "me", "permissions": []}
    return {"object": "list", "data": [entry]}


@pytest.fixture
def fake_server() -> FakeServer:
    """A fake server with no routes yet: every path answers 404 until a test adds replies."""
    return FakeServer()


@pytest.fixture
def make_server() -> ServerFactory:
    """A fake llama.cpp (our launcher: `/props` gives n_ctx) or vLLM server with one model.

    `n_ctx=None` leaves `/props` out, like plain llama-cpp-python without our launcher.
    """

    def make(
        backend: str = "llamacpp",
        *,
        model: str = MODEL,
        n_ctx: int | None = 4096,
        max_model_len: int = 2048,
    ) -> FakeServer:
        server = FakeServer()
        server.reply("GET", "/v1/models", 200, models_body(backend, model, max_model_len))
        if backend == "llamacpp" and n_ctx is not None:
            server.reply("GET", "/props", 200, {"default_generation_settings": {"n_ctx": n_ctx}})
        return server

    return make


@pytest.fixture
def sleeps() -> list[float]:
    """Every wait the client asked for, instead of sleeping."""
    return []


@pytest.fixture
def make_client(make_settings: SettingsFactory, sleeps: list[float]) -> Iterator[ClientFactory]:
    """An LLMClient wired to a FakeServer, recording its retry waits in `sleeps`."""
    clients: list[LLMClient] = []

    def make(server: FakeServer, **overrides: Any) -> LLMClient:
        client = LLMClient(
            make_settings(**overrides), transport=server.transport, sleep=sleeps.append
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
