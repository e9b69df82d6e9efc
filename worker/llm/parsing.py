"""Reading server answers: chat completions, vLLM's Prometheus gauges, embedding vectors."""

from __future__ import annotations

from typing import Any

from worker.llm.types import Completion, Usage

__all__ = ["parse_completion", "parse_vllm_metrics", "pooled"]


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


def pooled(embedding: Any) -> list[float]:
    """One vector per input: mean-pool when a server returns one vector per token.

    llama-cpp-python does that for models without a pooling layer (chat models).
    """
    values = list(embedding)
    if values and isinstance(values[0], list):
        width = len(values[0])
        return [sum(token[i] for token in values) / len(values) for i in range(width)]
    return [float(v) for v in values]
