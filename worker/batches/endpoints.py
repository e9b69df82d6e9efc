"""The line endpoints a batch may use: OpenAI's, passed through, and our job kinds.

OpenAI's endpoints go to the LLM servers through `LLMClient.post_raw` (routing,
windows, retries, error translation). `/kcw/v1/<kind>` runs a registered job kind
on the body; a long summary's chunks run one after another inside the line's job.
"""

from __future__ import annotations

from typing import Any

from worker.jobs import registry
from worker.jobs.kind import JobContext, JobKind
from worker.llm.types import Usage

__all__ = [
    "KCW_PREFIX",
    "OPENAI_ENDPOINTS",
    "execute",
    "kind_of",
    "supported_endpoints",
    "usage_of",
]

JSON = dict[str, Any]
OPENAI_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
KCW_PREFIX = "/kcw/v1/"


def supported_endpoints() -> tuple[str, ...]:
    return (*OPENAI_ENDPOINTS, *(f"{KCW_PREFIX}{name}" for name in registry.names()))


def kind_of(endpoint: str) -> JobKind[Any] | None:
    """The job kind behind a `/kcw/v1/<kind>` endpoint; None for OpenAI's endpoints."""
    if not endpoint.startswith(KCW_PREFIX):
        return None
    return registry.get(endpoint.removeprefix(KCW_PREFIX))


def usage_of(body: JSON) -> Usage:
    """Token usage of an answer: OpenAI's `usage` or a job result's."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return Usage()
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    return Usage(int(prompt), int(completion), float(usage.get("llm_seconds") or 0.0))


def _run_kind(ctx: JobContext, kind: JobKind[Any], body: JSON) -> JSON:
    outcome = kind.run(ctx, kind.parse(body))
    if kind.name == "summarize":
        from worker.jobs import summarize

        while isinstance(outcome, summarize.FanOut):
            total = len(outcome.chunks)
            partials = [
                summarize.summarize_chunk(ctx.client, chunk, index, total, outcome.options)
                for index, chunk in enumerate(outcome.chunks, 1)
            ]
            outcome = summarize.combine(ctx.client, partials, outcome.options, outcome.chunks_total)
    if not isinstance(outcome, dict):
        raise TypeError(f"job kind {kind.name} returned {type(outcome).__name__}")
    return outcome


def execute(ctx: JobContext, url: str, body: JSON) -> JSON:
    """Run one line; its successful outcome (status code, request id, body, usage)."""
    kind = kind_of(url)
    if kind is None:
        reply = ctx.client.post_raw(url, body)
        usage = usage_of(reply.body)
        usage.llm_seconds = reply.llm_seconds
        return {
            "status_code": reply.status_code,
            "request_id": reply.request_id,
            "body": reply.body,
            "usage": usage.as_dict(),
        }
    result = _run_kind(ctx, kind, body)
    return {
        "status_code": 200,
        "request_id": None,
        "body": result,
        "usage": usage_of(result).as_dict(),
    }
