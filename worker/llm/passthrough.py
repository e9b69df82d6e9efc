"""One request sent as the caller wrote it (the Batch API's lines), and the server's raw answer.

The body goes to the server unchanged except for `model`: a missing one becomes the
served model, and one the server does not serve fails at once with `ModelNotFound`
(llama-server answers any name with its one model, which would hide the mistake).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.errors import LLMRequestRejected, ModelNotFound
from worker.llm.http_errors import error_from_response

if TYPE_CHECKING:
    import httpx

    from worker.llm.routing import Endpoint
    from worker.llm.types import ServerInfo

__all__ = ["RawReply", "post_raw"]

JSON = dict[str, Any]


@dataclass(frozen=True)
class RawReply:
    """The server's answer to a pass-through request: status, JSON body and its request id."""

    status_code: int
    body: JSON
    request_id: str | None
    llm_seconds: float


def _with_model(body: JSON, info: ServerInfo) -> JSON:
    model = body.get("model")
    if model is None or model == "":
        return {**body, "model": info.model}
    if not isinstance(model, str):
        raise LLMRequestRejected(f"`model` must be a string naming the served model, not {model!r}")
    if model not in info.models:
        served = ", ".join(repr(m) for m in info.models)
        raise ModelNotFound(
            f"The model {model!r} is not served here (served: {served}); name one of them in "
            "the body's `model`, or leave `model` out."
        )
    return body


def post_raw(
    endpoint: Endpoint, info: ServerInfo, path: str, body: JSON, timeout: httpx.Timeout
) -> RawReply:
    """POST `body` to `path` on `endpoint`; an error status raises our error for it."""
    started = time.perf_counter()
    response = endpoint.http.post(
        endpoint.route(path), json=_with_model(body, info), timeout=timeout
    )
    if response.is_error:
        raise error_from_response(response, endpoint.url)
    data = response.json()
    if not isinstance(data, dict):
        raise ValueError(f"{path} returned {type(data).__name__}, expected a JSON object")
    return RawReply(
        status_code=response.status_code,
        body=data,
        request_id=response.headers.get("x-request-id"),
        llm_seconds=time.perf_counter() - started,
    )
