"""Per-server differences: structured-output shape, tokenizer, context length, capacity.

llama-cpp-python accepts only `{"type": "json_object", "schema": ...}` and falls back
to free JSON when a schema does not compile; vLLM takes OpenAI's `json_schema`
shape and `structured_outputs`. The worker validates output either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["PROFILES", "BackendName", "BackendProfile", "detect_backend"]

BackendName = Literal["llamacpp", "vllm"]
LLAMA_SERVER = "llama-server"
LLAMA_CPP_PYTHON = "llama-cpp-python"
JSON = dict[str, Any]


@dataclass(frozen=True)
class BackendProfile:
    """What the client needs to know to talk to one kind of server."""

    name: BackendName
    health_path: str
    embeddings_hint: str
    # llama-cpp-python mixes up token embeddings of several inputs in one request for
    # models without pooling; one input per request gives the right vectors.
    embed_one_at_a_time: bool = False
    # llama.cpp publishes its slots and build in `/props`; vLLM has no such route.
    has_props: bool = False
    # vLLM's `/metrics` says how many requests wait in its queue: a sign our window is too big.
    reports_queue: bool = False

    def schema_request(self, schema: JSON) -> JSON:
        """Request fields that constrain the answer to JSON matching `schema`."""
        if self.name == "vllm":
            return {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": schema},
                }
            }
        return {"response_format": {"type": "json_object", "schema": schema}}

    def choice_request(self, labels: list[str]) -> JSON:
        """Request fields that constrain the answer to one of `labels`."""
        if self.name == "vllm":
            return {"extra_body": {"structured_outputs": {"choice": labels}}}
        return self.schema_request(label_schema(labels))

    def parse_choice(self, text: str) -> str:
        """The label in a constrained answer (vLLM gives it bare, llama.cpp as JSON)."""
        if self.name == "vllm":
            return text.strip()
        value = json.loads(text)
        return str(value["label"]) if isinstance(value, dict) else str(value)

    def tokenize_path(self, engine: str | None) -> str:
        """The tokenize route: vLLM and llama-server say `/tokenize`, llama-cpp-python differs."""
        if self.name == "llamacpp" and engine != LLAMA_SERVER:
            return "/extras/tokenize"
        return "/tokenize"

    def tokenize_body(self, text: str, model: str, engine: str | None) -> JSON:
        """Body of a tokenize request for this server."""
        if self.name == "vllm":
            return {"model": model, "prompt": text, "add_special_tokens": False}
        if engine == LLAMA_SERVER:
            return {"content": text, "add_special": False}
        return {"model": model, "input": text}

    def needs_token_pooling(self, engine: str | None, error: str) -> bool:
        """Does this refusal of `/v1/embeddings` mean: fetch per-token vectors and pool them?

        llama-server with a chat model (pooling none) refuses pooled embeddings but serves
        per-token vectors on `/embeddings`.
        """
        return engine == LLAMA_SERVER and "pooling type 'none'" in error.lower()

    def capacity(self, props: JSON | None) -> int | None:
        """Requests the server runs at once: llama.cpp's `total_slots`; None when unknown."""
        value = (props or {}).get("total_slots")
        return value if isinstance(value, int) and value > 0 else None

    def engine(self, props: JSON | None) -> str | None:
        """Which llama.cpp server answers: llama-server's `/props` carries its `build_info`."""
        if self.name != "llamacpp":
            return None
        return LLAMA_SERVER if props and "build_info" in props else LLAMA_CPP_PYTHON

    def context_length(self, model_entry: JSON, props: JSON | None) -> int | None:
        """The served context length, from `/v1/models` (vLLM) or `/props` (llama.cpp)."""
        for key in ("max_model_len", "context_length", "n_ctx"):
            value = model_entry.get(key)
            if isinstance(value, int) and value > 0:
                return value
        if props:
            settings = props.get("default_generation_settings") or {}
            value = settings.get("n_ctx", props.get("n_ctx"))
            if isinstance(value, int) and value > 0:
                return value
        return None


def label_schema(labels: list[str]) -> JSON:
    """A JSON Schema whose only valid documents are `{"label": <one of labels>}`."""
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": labels}},
        "required": ["label"],
        "additionalProperties": False,
    }


PROFILES: dict[BackendName, BackendProfile] = {
    "llamacpp": BackendProfile(
        name="llamacpp",
        health_path="/health",
        embeddings_hint=(
            "set EMBEDDING=true for the llama.cpp server (in .env, then `make down && make up`; "
            "best with an embedding GGUF model as MODEL_FILE)"
        ),
        embed_one_at_a_time=True,
        has_props=True,
    ),
    "vllm": BackendProfile(
        name="vllm",
        health_path="/health",
        embeddings_hint=(
            "serve an embedding model with vLLM (a second server started with "
            'VLLM_EXTRA_ARGS="--runner pooling") and point LLM_SERVER_URL at it'
        ),
        reports_queue=True,
    ),
}


def detect_backend(models_payload: JSON) -> BackendName:
    """Tell the server kind from its `/v1/models` answer (vLLM says `owned_by: vllm`)."""
    for entry in models_payload.get("data") or []:
        if isinstance(entry, dict) and entry.get("owned_by") == "vllm":
            return "vllm"
    return "llamacpp"
