"""The client for the OpenAI-compatible LLM server, and the one error boundary.

Every httpx and openai exception is translated in `translate_error`; callers only
ever see `worker.errors`. Retries of one call (seconds) happen here with
tenacity; the SDK's own retries are off so that nothing retries twice.
"""

from __future__ import annotations

import dataclasses
import email.utils
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
import openai

from worker import deadline
from worker.backends import (
    LLAMA_SERVER,
    PROFILES,
    BackendName,
    BackendProfile,
    detect_backend,
)
from worker.config import Settings
from worker.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    LLMError,
    LLMRateLimited,
    LLMRequestRejected,
    LLMServerDown,
    LLMUnavailable,
    ModelNotFound,
)
from worker.limits import AdaptiveLimit, window_for_slots
from worker.retrying import call_retrying
from worker.routing import Endpoint, Outcome, ServerPool

__all__ = [
    "Completion",
    "LLMClient",
    "ServerInfo",
    "Usage",
    "parse_completion",
    "translate_error",
]

JSON = dict[str, Any]
T = TypeVar("T")
# Seconds between two looks at vLLM's queue (`/metrics`) by one worker process.
METRICS_INTERVAL_S = 5.0
# Words servers use when a prompt (or max_tokens) does not fit: llama.cpp, vLLM, OpenAI.
_CONTEXT_MARKERS = (
    "context length",
    "context size",
    "context window",
    "context_length",
    "maximum context",
    "max_model_len",
)


@dataclass
class Usage:
    """Token counts, summed over every call a job made."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Seconds spent inside successful HTTP calls to the server (queueing and retries excluded).
    llm_seconds: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> Usage:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.llm_seconds += other.llm_seconds
        return self

    def as_dict(self) -> dict[str, float]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "llm_seconds": round(self.llm_seconds, 6),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        """Usage as a job result carries it (older results have no llm_seconds)."""
        return cls(
            int(data.get("prompt_tokens", 0)),
            int(data.get("completion_tokens", 0)),
            float(data.get("llm_seconds", 0.0)),
        )


@dataclass
class Completion:
    """One chat completion, reduced to what jobs return."""

    text: str
    finish_reason: str
    model: str
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class ServerInfo:
    """What the server told us about itself: kind, model and context length."""

    backend: BackendName
    model: str
    models: tuple[str, ...]
    context_length: int | None
    # Requests the server runs at once (llama.cpp slots); None when it does not say (vLLM).
    capacity: int | None = None
    # llama.cpp only: "llama-server" or "llama-cpp-python" (their tokenize routes differ).
    engine: str | None = None

    @property
    def profile(self) -> BackendProfile:
        return PROFILES[self.backend]


@dataclass(frozen=True)
class HealthReport:
    """The answer of the health route, without interpretation beyond ready or not."""

    state: Literal["ready", "loading", "failed", "unreachable"]
    status_code: int | None
    detail: str


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header, given as seconds or as an HTTP date."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None  # unparseable: fall back to our own backoff
        seconds = parsed.timestamp() - time.time()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _server_message(response: httpx.Response) -> str:
    """The error text a server put in its body, in OpenAI, vLLM or FastAPI shape."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])
    return str(body)[:500]


def error_from_response(response: httpx.Response, url: str) -> LLMError:
    """Map an HTTP error status to our error tree, naming what to fix."""
    status = response.status_code
    message = _server_message(response)
    where = f"{response.request.method} {response.request.url.path}"
    if status in (401, 403):
        return AuthenticationFailed(
            f"The LLM server at {url} refused the API key (HTTP {status}): set LLM_API_KEY "
            "to the key the server was started with."
        )
    if status == 429:
        return LLMRateLimited(
            f"The LLM server is rate limiting ({where}: HTTP 429): {message}",
            retry_after=_retry_after(response),
        )
    if status in (502, 503, 504):
        loading = "loading" in message.lower()
        reason = "is still loading its model" if loading else f"is unavailable (HTTP {status})"
        return LLMServerDown(
            f"The LLM server at {url} {reason}: {message or 'no detail'}. "
            f"Wait until `curl {url}/health` answers 200.",
            retry_after=_retry_after(response),
        )
    lowered = message.lower()
    if any(marker in lowered for marker in _CONTEXT_MARKERS) or status == 413:
        return ContextLengthExceeded(
            f"The prompt does not fit the model's context: {message} "
            "Shorten the input, lower max_tokens, or raise N_CTX on the server."
        )
    if status == 404 and "model" in lowered:
        return ModelNotFound(f"{message} Set LLM_MODEL to a model listed by /v1/models.")
    if status == 404:
        return LLMRequestRejected(
            f"{where} is not served at {url} (HTTP 404): check LLM_SERVER_URL and LLM_BACKEND."
        )
    return LLMRequestRejected(f"The LLM server rejected {where} (HTTP {status}): {message}")


def translate_error(exc: Exception, url: str, timeout: float) -> LLMError:
    """The one boundary: turn an httpx or openai exception into an LLMError."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        return error_from_response(exc.response, url)
    if isinstance(exc, httpx.ConnectTimeout) or isinstance(exc.__cause__, httpx.ConnectTimeout):
        return LLMServerDown(
            f"Cannot connect to the LLM server at {url} (connect timeout): start it "
            "(`make up`) or fix LLM_SERVER_URL."
        )
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return LLMUnavailable(
            f"The LLM server at {url} did not answer within LLM_TIMEOUT={timeout:g}s; "
            "raise LLM_TIMEOUT or lower max_tokens."
        )
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        return LLMServerDown(
            f"Cannot reach the LLM server at {url} ({exc.__class__.__name__}): start it "
            "(`make up`) or fix LLM_SERVER_URL."
        )
    if isinstance(exc, httpx.HTTPStatusError):
        return error_from_response(exc.response, url)
    if isinstance(exc, ValueError | KeyError | TypeError | openai.OpenAIError):
        return LLMRequestRejected(f"Unexpected answer from the LLM server at {url}: {exc}")
    raise exc


class LLMClient:
    """The pooled client for one or more LLM servers, shared by every thread of a worker.

    Each request goes to the least-loaded healthy server, within that server's
    in-flight window (see `worker.routing` and `worker.limits`).
    """

    def __init__(
        self,
        settings: Settings,
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
            raise translate_error(exc, url, self.settings.llm_timeout) from exc

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

    def _get_json(self, endpoint: Endpoint, path: str) -> JSON:
        response = endpoint.http.get(path)
        if response.is_error:
            raise error_from_response(response, endpoint.url)
        body = response.json()
        if not isinstance(body, dict):
            raise ValueError(f"{path} returned {type(body).__name__}, expected an object")
        return body

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
        if info is None or info.backend != "vllm":
            return
        now = time.monotonic()
        if now < endpoint.next_metrics:
            return
        endpoint.next_metrics = now + METRICS_INTERVAL_S
        load = self.metrics(endpoint)
        if load.get("waiting", 0) > 0:
            endpoint.limit.cap_at(int(load.get("running", 0)))
            self.pool.changed()

    def list_models(self) -> JSON:
        """The raw `/v1/models` answer of a healthy server."""
        return self._call(lambda ep, _: self._get_json(ep, "/v1/models"), limited=False)

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
                endpoint.info = self._fetch_info(endpoint)
                endpoint.limit.set_capacity(self.window_of(endpoint.info))
                self.pool.changed()
            return endpoint.info

    def window_of(self, info: ServerInfo) -> int:
        """The in-flight window for a server: from its slots, else LLM_MAX_INFLIGHT."""
        cap = self.settings.llm_max_inflight
        return min(window_for_slots(info.capacity), cap) if info.capacity else cap

    def _fetch_info(self, endpoint: Endpoint) -> ServerInfo:
        url = endpoint.url
        models = self._get_json(endpoint, "/v1/models")
        entries = [e for e in models.get("data") or [] if isinstance(e, dict) and e.get("id")]
        ids = tuple(str(e["id"]) for e in entries)
        if not ids:
            raise ModelNotFound(f"The LLM server at {url} lists no models in /v1/models.")
        wanted = self.settings.llm_model
        if wanted and wanted not in ids:
            raise ModelNotFound(
                f"LLM_MODEL={wanted!r} is not served by {url}; it serves: {', '.join(ids)}. "
                "Set LLM_MODEL to one of them, or leave it empty to use the first."
            )
        model = wanted or ids[0]
        entry = next(e for e in entries if e["id"] == model)
        backend: BackendName = (
            detect_backend(models)
            if self.settings.llm_backend == "auto"
            else self.settings.llm_backend
        )
        props = self._props(endpoint) if backend == "llamacpp" else None
        context = self.settings.llm_context_length or None
        if context is None:
            context = PROFILES[backend].context_length(entry, props)
        return ServerInfo(
            backend=backend,
            model=model,
            models=ids,
            context_length=context,
            capacity=PROFILES[backend].capacity(props),
            engine=PROFILES[backend].engine(props),
        )

    def _props(self, endpoint: Endpoint) -> JSON | None:
        """llama.cpp's `/props`, or None when the server has none or answers nonsense."""
        response = endpoint.http.get("/props")
        if response.status_code != 200:
            return None
        try:
            body = response.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

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
                "/v1/chat/completions", json={"model": info.model, **body}, timeout=self._timeout()
            )
            if response.is_error:
                raise error_from_response(response, endpoint.url)
            completion = parse_completion(response.json(), info.model)
            completion.usage.llm_seconds = time.perf_counter() - started
            return completion

        return self._call(call)

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
                    if info.engine == LLAMA_SERVER and "pooling type 'none'" in str(exc).lower():
                        return self._token_embeddings(endpoint, batch, info.model)
                    raise
                vectors = [_pooled(item.embedding) for item in sorted(response.data, key=_index)]
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
        vectors = [_pooled(item["embedding"]) for item in items]
        tokens = sum(len(item["embedding"]) for item in items)
        return vectors, Usage(prompt_tokens=tokens), model


def parse_completion(data: Any, model: str) -> Completion:
    """A chat completion body, checked just enough to give a clear error when it is odd."""
    if not isinstance(data, dict):
        raise ValueError(f"the completion is a {type(data).__name__}, not an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("the completion has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise ValueError("the completion's first choice has no message")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise ValueError(f"the completion's content is a {type(content).__name__}")
    usage = Usage()
    raw_usage = data.get("usage")
    if isinstance(raw_usage, dict):
        usage = Usage(
            int(raw_usage.get("prompt_tokens") or 0), int(raw_usage.get("completion_tokens") or 0)
        )
    return Completion(
        text=content or "",
        finish_reason=str(choice.get("finish_reason") or "stop"),
        model=str(data.get("model") or model),
        usage=usage,
    )


_VLLM_GAUGES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
}


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """Sum vLLM's load gauges over engines from Prometheus text."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        key = _VLLM_GAUGES.get(name.strip())
        if key is None:
            continue
        try:
            value = float(line.rsplit(" ", 1)[-1])
        except ValueError:
            continue
        found[key] = found.get(key, 0.0) + value
    return found


def _index(item: Any) -> int:
    return int(item.index)


def _pooled(embedding: Any) -> list[float]:
    """One vector per input: mean-pool when a server returns one vector per token.

    llama-cpp-python does that for models without a pooling layer (chat models).
    """
    values = list(embedding)
    if values and isinstance(values[0], list):
        width = len(values[0])
        return [sum(token[i] for token in values) / len(values) for i in range(width)]
    return [float(v) for v in values]
