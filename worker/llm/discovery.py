"""What a server serves, asked once per server: its models, backend, context and slots."""

from __future__ import annotations

from typing import Any

from worker.config import WorkerSettings
from worker.errors import ModelNotFound
from worker.llm.backends import PROFILES, BackendName, detect_backend
from worker.llm.http_errors import error_from_response
from worker.llm.routing import Endpoint
from worker.llm.types import ServerInfo

__all__ = ["fetch_info", "get_json", "read_props"]

JSON = dict[str, Any]


def get_json(endpoint: Endpoint, path: str) -> JSON:
    """A route's JSON object, or the error the server's answer maps to."""
    response = endpoint.http.get(path)
    if response.is_error:
        raise error_from_response(response, endpoint.url)
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError(f"{path} returned {type(body).__name__}, expected an object")
    return body


def fetch_info(endpoint: Endpoint, settings: WorkerSettings) -> ServerInfo:
    """Ask a server what it serves: models, backend, context length, slots and engine."""
    url = endpoint.url
    models = get_json(endpoint, "/v1/models")
    entries = [e for e in models.get("data") or [] if isinstance(e, dict) and e.get("id")]
    ids = tuple(str(e["id"]) for e in entries)
    if not ids:
        raise ModelNotFound(f"The LLM server at {url} lists no models in /v1/models.")
    wanted = settings.llm_model
    if wanted and wanted not in ids:
        raise ModelNotFound(
            f"LLM_MODEL={wanted!r} is not served by {url}; it serves: {', '.join(ids)}. "
            "Set LLM_MODEL to one of them, or leave it empty to use the first."
        )
    model = wanted or ids[0]
    entry = next(e for e in entries if e["id"] == model)
    backend: BackendName = (
        detect_backend(models) if settings.llm_backend == "auto" else settings.llm_backend
    )
    profile = PROFILES[backend]
    props = read_props(endpoint) if profile.has_props else None
    context = settings.llm_context_length or None
    if context is None:
        context = profile.context_length(entry, props)
    return ServerInfo(
        backend=backend,
        model=model,
        models=ids,
        context_length=context,
        capacity=profile.capacity(props),
        engine=profile.engine(props),
    )


def read_props(endpoint: Endpoint) -> JSON | None:
    """llama.cpp's `/props`, or None when the server has none or answers nonsense."""
    response = endpoint.http.get("/props")
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
