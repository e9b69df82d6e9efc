"""The pooled client for the OpenAI-compatible LLM servers a worker sends requests to.

Every httpx and openai exception is translated at one boundary
(`worker.llm.http_errors`); callers only ever see `worker.errors`. Retries of one
call (seconds) happen here with tenacity; the SDK's own retries are off so that
nothing retries twice.
"""

from __future__ import annotations

import dataclasses
import http.cookiejar
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import openai

from worker import deadline, tracing
from worker.config import WorkerSettings
from worker.errors import LLMServerDown, LLMUnavailable
from worker.llm.backends import PROFILES, BackendName
from worker.llm.discovery import fetch_info, get_json
from worker.llm.http_errors import error_from_response, translate_error
from worker.llm.limits import AdaptiveLimit, window_for
from worker.llm.observed import count_failure, count_success
from worker.llm.parsing import parse_completion, parse_vllm_metrics, pooled
from worker.llm.passthrough import RawReply, post_raw
from worker.llm.retrying import call_retrying
from worker.llm.routing import Endpoint, Outcome, ServerPool
from worker.llm.types import Completion, HealthReport, ServerInfo, Usage

__all__ = ["LLMClient"]

JSON = dict[str, Any]
T = TypeVar("T")
# Seconds between two looks at vLLM's queue (`/metrics`) by one worker process.
METRICS_INTERVAL_S = 5.0
CHAT_PATH = "/v1/chat/completions"


class NoCookies(http.cookiejar.CookieJar):
    """A cookie jar that keeps nothing: the client is shared by every job of a worker, so a
    cookie one reply set must not ride on other jobs' requests (and reading each reply's
    headers for cookies costs time on every call)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def add_cookie_header(self, request: Any) -> None:
        return None


class LLMClient:
    """The pooled client for one or more LLM servers, shared by every thread of a worker.

    Each request goes to the least-loaded healthy server, within that server's
    in-flight window (see `worker.llm.routing` and `worker.llm.limits`).
    """

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.urls = settings.llm_server_urls
        self.url = ", ".join(self.urls)
        self._sleep = sleep
        self._transport = transport
        self.pool = ServerPool(
            [self._endpoint(url) for url in self.urls],
            probe=self._probe,
            probe_interval=settings.llm_health_interval,
        )

    def _endpoint(self, url: str) -> Endpoint:
        settings = self.settings
        api_key = settings.llm_api_key.get_secret_value()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        cap = settings.llm_max_inflight
        limits = httpx.Limits(max_connections=cap + 8, max_keepalive_connections=cap + 8)
        http = httpx.Client(
            base_url=url,
            headers=headers,
            timeout=httpx.Timeout(settings.llm_timeout, connect=min(10.0, settings.llm_timeout)),
            limits=limits,
            transport=self._transport,
            event_hooks={"request": [_tag_with_job]},
            cookies=NoCookies(),
        )
        sdk = openai.OpenAI(
            base_url=f"{url}/v1",
            api_key=api_key or "no-key",
            http_client=http,
            max_retries=0,
            timeout=settings.llm_timeout,
        )
        # One request at a time until the server says how many it can take.
        return Endpoint(url=url, http=http, sdk=sdk, limit=AdaptiveLimit(cap, window=1.0))

    @property
    def endpoints(self) -> list[Endpoint]:
        return self.pool.endpoints

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.http.close()

    @contextmanager
    def _boundary(self, url: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            error = translate_error(exc, url, self.settings.llm_timeout)
            count_failure(url, error)
            raise error from exc

    def _call(self, fn: Callable[[Endpoint, ServerInfo], T], *, limited: bool = True) -> T:
        """Run `fn` on a chosen server and what it serves, moving on when a server is down.

        One attempt tries every healthy server once; attempts are retried with
        backoff (tenacity) while the error is `LLMUnavailable`.
        """

        def attempt() -> T:
            tried: list[Endpoint] = []
            while True:
                deadline.check()
                endpoint = self.pool.acquire(limited=limited, exclude=tried)
                if endpoint is None:
                    raise LLMServerDown(f"No LLM server answered ({self.url}).")
                outcome: Outcome = "neutral"
                try:
                    with self._boundary(endpoint.url):
                        result = fn(endpoint, self.ensure_info(endpoint))
                    outcome = "ok"
                    count_success(endpoint.url, result)
                    return result
                except LLMServerDown:
                    outcome = "down"
                    tried.append(endpoint)
                    if not self.pool.has_alternative(tried):
                        raise
                except LLMUnavailable:
                    outcome = "overload"
                    raise
                finally:
                    self.pool.release(endpoint, outcome)
                    if outcome == "ok":
                        self._observe_load(endpoint)

        return call_retrying(
            attempt,
            attempts=self.settings.llm_retry_attempts,
            max_wait=self.settings.llm_retry_max_wait,
            sleep=lambda seconds: self._sleep(deadline.cap(seconds)),
        )

    def _timeout(self) -> httpx.Timeout:
        """LLM_TIMEOUT, or less when the running job's time limit is nearer."""
        seconds = deadline.cap(self.settings.llm_timeout)
        return httpx.Timeout(seconds, connect=min(10.0, seconds))

    def _probe(self, endpoint: Endpoint) -> bool:
        """Does this server's health route say ready? (for a server marked down)"""
        return self._health_of(endpoint).state == "ready"

    def health(self) -> HealthReport:
        """One probe of the first server's health route, without retries (for `kcw doctor`)."""
        return self._health_of(self.endpoints[0])

    def _health_of(self, endpoint: Endpoint) -> HealthReport:
        path = PROFILES[self._backend_hint(endpoint)].health_path
        try:
            response = endpoint.http.get(path, timeout=5.0)
        except httpx.HTTPError as exc:
            return HealthReport("unreachable", None, f"{exc.__class__.__name__}: {exc}")
        text = response.text.strip()
        if response.status_code == 200:
            return HealthReport("ready", 200, text or "ok")
        if response.status_code == 503 and "loading" in text.lower():
            return HealthReport("loading", 503, text)
        return HealthReport("failed", response.status_code, text)

    def _backend_hint(self, endpoint: Endpoint) -> BackendName:
        if self.settings.llm_backend != "auto":
            return self.settings.llm_backend
        return endpoint.info.backend if endpoint.info else "llamacpp"

    def metrics(self, endpoint: Endpoint | None = None) -> dict[str, float]:
        """vLLM's load gauges from `/metrics`: running and waiting requests, KV-cache use (0-1).

        Empty when the server has no such metrics (llama.cpp) or cannot be reached.
        """
        endpoint = endpoint or self.endpoints[0]
        try:
            response = endpoint.http.get("/metrics", timeout=5.0)
        except httpx.HTTPError:
            return {}
        if response.status_code != 200:
            return {}
        return parse_vllm_metrics(response.text)

    def _observe_load(self, endpoint: Endpoint) -> None:
        """On vLLM, every few seconds: requests waiting in its queue mean our window is too big."""
        info = endpoint.info
        if info is None or not info.profile.reports_queue:
            return
        now = time.monotonic()
        if now < endpoint.next_metrics:
            return
        endpoint.next_metrics = now + METRICS_INTERVAL_S
        load = self.metrics(endpoint)
        if load.get("waiting", 0) > 0:
            self.pool.cap_at(endpoint, int(load.get("running", 0)))

    def list_models(self) -> JSON:
        """The raw `/v1/models` answer of a healthy server."""
        return self._call(lambda ep, _: get_json(ep, "/v1/models"), limited=False)

    def server_info(self, refresh: bool = False) -> ServerInfo:
        """Backend, model and context length, asked once per server and then cached.

        With several servers the context length is the smallest one among them that
        answered, so that a planned prompt fits wherever it goes.
        """
        if refresh:
            for endpoint in self.endpoints:
                endpoint.info = None
        info = self._call(lambda _, info: info, limited=False)
        lengths = [ep.info.context_length for ep in self.endpoints if ep.info]
        known = [n for n in lengths if n]
        if known and info.context_length != min(known):
            info = dataclasses.replace(info, context_length=min(known))
        return info

    def ensure_info(self, endpoint: Endpoint) -> ServerInfo:
        """What this server serves, asked once (again after it was down); sets its window."""
        info = endpoint.info
        if info is not None:
            return info
        with endpoint.info_lock, self._boundary(endpoint.url):
            if endpoint.info is None:
                endpoint.info = fetch_info(endpoint, self.settings)
                self.pool.set_capacity(endpoint, self.window_of(endpoint.info))
            return endpoint.info

    def window_of(self, info: ServerInfo) -> int:
        """The in-flight window for a server: from its slots, else LLM_MAX_INFLIGHT."""
        return window_for(info.capacity, self.settings.llm_max_inflight)

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: list[str] | None = None,
        extra: JSON | None = None,
    ) -> Completion:
        """One chat completion; `extra` carries backend-specific fields (response_format, ...)."""
        body: JSON = {"messages": messages}
        optional = {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "stop": stop,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        extra = dict(extra or {})
        body.update(extra.pop("extra_body", None) or {})  # the SDK's name for raw fields
        body.update(extra)

        def call(endpoint: Endpoint, info: ServerInfo) -> Completion:
            # Plain httpx on the hot path: the SDK's request and response models cost about
            # a millisecond per call, which is most of a job's overhead on a fast server.
            started = time.perf_counter()
            response = endpoint.http.post(
                endpoint.route(CHAT_PATH),
                json={"model": info.model, **body},
                timeout=self._timeout(),
            )
            if response.is_error:
                raise error_from_response(response, endpoint.url)
            completion = parse_completion(response.json(), info.model)
            completion.usage.llm_seconds = time.perf_counter() - started
            return completion

        return self._call(call)

    def post_raw(self, path: str, body: JSON) -> RawReply:
        """POST `body` to `path` as written (a Batch API line), routed, windowed and retried."""
        return self._call(lambda ep, info: post_raw(ep, info, path, body, self._timeout()))

    def count_tokens(self, text: str) -> int | None:
        """Tokens in `text` by the server's own tokenizer, or None if it has no such route."""

        def call(endpoint: Endpoint, info: ServerInfo) -> int | None:
            profile = info.profile
            path = profile.tokenize_path(info.engine)
            body = profile.tokenize_body(text, info.model, info.engine)
            response = endpoint.http.post(path, json=body, timeout=self._timeout())
            if response.status_code in (404, 405):
                return None
            if response.is_error:
                raise error_from_response(response, endpoint.url)
            data = response.json()
            if not isinstance(data, dict):
                raise ValueError(f"{path} returned {type(data).__name__}")
            if isinstance(data.get("count"), int):
                return int(data["count"])
            return len(data.get("tokens") or [])

        return self._call(call, limited=False)

    def embed(self, texts: list[str]) -> tuple[list[list[float]], Usage, str]:
        """Embeddings for `texts`, in order."""

        def call(
            batch: list[str],
        ) -> Callable[[Endpoint, ServerInfo], tuple[list[list[float]], Usage, str]]:
            def on(endpoint: Endpoint, info: ServerInfo) -> tuple[list[list[float]], Usage, str]:
                try:
                    response = endpoint.sdk.embeddings.create(
                        model=info.model, input=batch, timeout=self._timeout()
                    )
                except openai.BadRequestError as exc:
                    if info.profile.needs_token_pooling(info.engine, str(exc)):
                        return self._token_embeddings(endpoint, batch, info.model)
                    raise
                vectors = [pooled(item.embedding) for item in sorted(response.data, key=_index)]
                usage = Usage(prompt_tokens=response.usage.prompt_tokens if response.usage else 0)
                return vectors, usage, response.model or info.model

            return on

        info = self.server_info()
        if not info.profile.embed_one_at_a_time:
            return self._call(call(texts))
        vectors: list[list[float]] = []
        usage = Usage()
        model = info.model
        for text in texts:
            one, used, model = self._call(call([text]))
            vectors.extend(one)
            usage.add(used)
        return vectors, usage, model

    def _token_embeddings(
        self, endpoint: Endpoint, batch: list[str], model: str
    ) -> tuple[list[list[float]], Usage, str]:
        """llama-server with a chat model (no pooling): per-token vectors, mean-pooled here."""
        response = endpoint.http.post("/embeddings", json={"input": batch}, timeout=self._timeout())
        if response.is_error:
            raise error_from_response(response, endpoint.url)
        items = response.json()
        if not isinstance(items, list):
            raise ValueError(f"/embeddings returned {type(items).__name__}, expected a list")
        items = sorted(items, key=lambda item: int(item["index"]))
        vectors = [pooled(item["embedding"]) for item in items]
        tokens = sum(len(item["embedding"]) for item in items)
        return vectors, Usage(prompt_tokens=tokens), model


def _tag_with_job(request: httpx.Request) -> None:
    """Name the running job (and this run of it) in every request's headers."""
    request.headers.update(tracing.headers())


def _index(item: Any) -> int:
    return int(item.index)
