"""What each job does, given a client and validated input; Celery tasks only wrap these."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import jsonschema

from worker import prompts
from worker.chunking import split_text
from worker.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    EmbeddingsUnsupported,
    LLMRequestRejected,
    LLMResponseInvalid,
    ModelNotFound,
)
from worker.inputs import ChatInput, ClassifyInput, EmbedInput, ExtractInput
from worker.llm_client import LLMClient, Usage

__all__ = [
    "SummaryPlan",
    "chat",
    "classify",
    "combine_summaries",
    "embed",
    "extract",
    "plan_summary",
    "summarize_part",
]

log = logging.getLogger(__name__)

JSON = dict[str, Any]
# Used when the server reports no context length and LLM_CONTEXT_LENGTH is unset.
FALLBACK_CONTEXT = 2048
# Tokens kept free for the instructions around a chunk, and a safety share for tokenizer drift.
PROMPT_OVERHEAD_TOKENS = 96
SAFETY = 0.85
# A conservative guess when the server has no tokenize route.
FALLBACK_CHARS_PER_TOKEN = 3.0
SHOWN_OUTPUT_CHARS = 2000


def _result(model: str, usage: Usage, **fields: Any) -> JSON:
    return {**fields, "model": model, "usage": usage.as_dict()}


def chat(client: LLMClient, inp: ChatInput) -> JSON:
    """One chat completion: text, finish reason and usage."""
    completion = client.chat(
        [m.model_dump() for m in inp.messages],
        max_tokens=inp.max_tokens,
        temperature=inp.temperature,
        top_p=inp.top_p,
        seed=inp.seed,
        stop=inp.stop,
    )
    return _result(
        completion.model,
        completion.usage,
        text=completion.text,
        finish_reason=completion.finish_reason,
    )


@dataclass(frozen=True)
class SummaryPlan:
    """How a document will be summarized: in one call, or as chunks then a combine step."""

    chunks: list[str]
    context_length: int
    chunk_chars: int


def _chars_per_token(client: LLMClient, sample: str) -> float:
    tokens = client.count_tokens(sample) if sample else None
    if not tokens:
        return FALLBACK_CHARS_PER_TOKEN
    return max(len(sample) / tokens, 1.0)


def chunk_budget_chars(client: LLMClient, text: str, summary_tokens: int) -> tuple[int, int]:
    """How many characters of document fit one request, from the server's real context."""
    context = client.server_info().context_length or FALLBACK_CONTEXT
    budget_tokens = int((context - summary_tokens - PROMPT_OVERHEAD_TOKENS) * SAFETY)
    if budget_tokens < 64:
        raise ContextLengthExceeded(
            f"The model's context ({context} tokens) leaves no room for a chunk after "
            f"{summary_tokens} summary tokens: lower max_tokens (SUMMARY_MAX_TOKENS) or raise "
            "N_CTX on the server."
        )
    ratio = _chars_per_token(client, text[:4000])
    return int(budget_tokens * ratio), context


def plan_summary(client: LLMClient, text: str, summary_tokens: int) -> SummaryPlan:
    """Split `text` into chunks sized by the served context length."""
    chunk_chars, context = chunk_budget_chars(client, text, summary_tokens)
    chunks = split_text(text, chunk_chars)
    log.info(
        "summarize: %d chars -> %d chunk(s) of <= %d chars", len(text), len(chunks), chunk_chars
    )
    return SummaryPlan(chunks=chunks, context_length=context, chunk_chars=chunk_chars)


def summarize_part(
    client: LLMClient,
    text: str,
    *,
    max_tokens: int,
    instructions: str | None,
    part: tuple[int, int] | None,
) -> JSON:
    """Summarize one chunk (or a whole short document)."""
    completion = client.chat(
        prompts.summary_messages(text, instructions, part), max_tokens=max_tokens, temperature=0.2
    )
    return _result(completion.model, completion.usage, summary=completion.text.strip())


def combine_summaries(
    client: LLMClient, partials: list[str], *, max_tokens: int, instructions: str | None
) -> JSON:
    """Merge the partial summaries of a document into one."""
    completion = client.chat(
        prompts.combine_messages(partials, instructions), max_tokens=max_tokens, temperature=0.2
    )
    return _result(completion.model, completion.usage, summary=completion.text.strip())


def _first_error(schema: JSON, value: Any) -> str | None:
    validator_cls = jsonschema.validators.validator_for(schema)
    error = jsonschema.exceptions.best_match(validator_cls(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"


def extract(client: LLMClient, inp: ExtractInput, max_attempts: int) -> JSON:
    """JSON that validates against the schema, asking again on invalid output."""
    request = client.server_info().profile.schema_request(inp.json_schema)
    usage = Usage()
    feedback: str | None = None
    last_output = ""
    model = ""
    for attempt in range(1, max_attempts + 1):
        completion = client.chat(
            prompts.extract_messages(inp, feedback),
            max_tokens=inp.max_tokens,
            temperature=0.0,
            extra=request,
        )
        usage.add(completion.usage)
        model = completion.model
        last_output = completion.text
        try:
            value = json.loads(completion.text)
        except json.JSONDecodeError as exc:
            feedback = f"not JSON ({exc.msg})"
            if completion.finish_reason == "length":
                feedback += "; the answer was cut off at max_tokens"
            continue
        feedback = _first_error(inp.json_schema, value)
        if feedback is None:
            return _result(model, usage, data=value, attempts=attempt)
    raise LLMResponseInvalid(
        f"The model's output did not match the schema after {max_attempts} attempts "
        f"(EXTRACT_MAX_ATTEMPTS): {feedback}. Simplify the schema, raise max_tokens, or use a "
        "larger model.",
        last_output[:SHOWN_OUTPUT_CHARS],
    )


def classify(client: LLMClient, inp: ClassifyInput, max_attempts: int) -> JSON:
    """Exactly one of the labels, chosen under constrained decoding."""
    profile = client.server_info().profile
    request = profile.choice_request(inp.labels)
    usage = Usage()
    last_output = ""
    for _ in range(max_attempts):
        completion = client.chat(
            prompts.classify_messages(inp), max_tokens=64, temperature=0.0, extra=request
        )
        usage.add(completion.usage)
        last_output = completion.text
        try:
            label = profile.parse_choice(completion.text)
        except (ValueError, KeyError, TypeError):
            continue
        if label in inp.labels:
            return _result(completion.model, usage, label=label)
    raise LLMResponseInvalid(
        f"The model did not answer with one of the labels {inp.labels} after {max_attempts} "
        "attempts (EXTRACT_MAX_ATTEMPTS).",
        last_output[:SHOWN_OUTPUT_CHARS],
    )


def embed(client: LLMClient, inp: EmbedInput) -> JSON:
    """Embedding vectors, or a clear error when the server does not serve embeddings."""
    info = client.server_info()
    try:
        vectors, usage, model = client.embed(inp.texts)
    except LLMRequestRejected as exc:
        if isinstance(exc, ContextLengthExceeded | AuthenticationFailed | ModelNotFound):
            raise
        raise EmbeddingsUnsupported(
            f"The LLM server at {client.url} does not serve embeddings for {info.model!r} "
            f"({exc}). To enable them, {info.profile.embeddings_hint}."
        ) from exc
    return _result(model, usage, embeddings=vectors, dimensions=len(vectors[0]) if vectors else 0)
