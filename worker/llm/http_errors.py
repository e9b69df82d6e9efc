"""The one error boundary: httpx and openai exceptions become `worker.errors` classes here.

The mapping is a table of checks in `translate_error` and `error_from_response`;
callers of the LLM client only ever see `worker.errors`.
"""

from __future__ import annotations

import email.utils
import math
import time

import httpx
import openai

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

__all__ = ["error_from_response", "translate_error"]

# Words servers use when a prompt (or max_tokens) does not fit: llama.cpp, vLLM, OpenAI.
_CONTEXT_MARKERS = (
    "context length",
    "context size",
    "context window",
    "context_length",
    "maximum context",
    "max_model_len",
)


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
