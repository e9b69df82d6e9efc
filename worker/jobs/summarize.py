"""`summarize`: a document of any length, in one call or in rounds of chunks.

A document that fits the model's context is summarized in one call. A longer one
is split by the served context length into chunks that are summarized in parallel
(the task fans them out as a Celery chord), then one step combines the partial
summaries, in more rounds while they still do not fit. The usage of every round
is carried along, so the result counts every token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from worker.errors import ContextLengthExceeded
from worker.jobs.chunking import split_text
from worker.jobs.inputs import MAX_DOCUMENT_CHARS, JobInput
from worker.jobs.kind import CliInput, Demo, JobContext, JobKind, job_result
from worker.jobs.registry import register
from worker.llm.types import Usage

if TYPE_CHECKING:
    from worker.llm.client import LLMClient

__all__ = [
    "KIND",
    "MAX_ROUNDS",
    "FanOut",
    "SummarizeInput",
    "SummaryPlan",
    "combine",
    "combine_summaries",
    "long_document",
    "plan_summary",
    "start",
    "summarize_chunk",
    "summarize_part",
]

log = logging.getLogger(__name__)

JSON = dict[str, Any]
Messages = list[dict[str, str]]
# Used when the server reports no context length and LLM_CONTEXT_LENGTH is unset.
FALLBACK_CONTEXT = 2048
# Tokens kept free for the instructions around a chunk, and a safety share for tokenizer drift.
PROMPT_OVERHEAD_TOKENS = 96
SAFETY = 0.85
# A conservative guess when the server has no tokenize route.
FALLBACK_CHARS_PER_TOKEN = 3.0
# Rounds of combining before giving up; each round shrinks the text by about chunks x.
MAX_ROUNDS = 4
# Real prose that ships with every Python: chapters of the language reference.
DOC_TOPICS = ("execmodel", "import", "exceptions", "assignment")

SUMMARY_SYSTEM = "You write short, faithful summaries. Keep names, numbers and conclusions."


class SummarizeInput(JobInput):
    """Input of `summarize`: a document of any length."""

    text: str = Field(min_length=1, max_length=MAX_DOCUMENT_CHARS)
    max_tokens: int | None = Field(None, ge=16, le=4096)
    instructions: str | None = Field(None, max_length=2000)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is blank")
        return value


def summary_messages(text: str, instructions: str | None, part: tuple[int, int] | None) -> Messages:
    """Ask for a summary of `text`, which may be one part of a longer document."""
    where = f"part {part[0]} of {part[1]} of a longer document" if part else "a document"
    ask = f"Summarize the following text, {where}."
    if instructions:
        ask += f" {instructions}"
    return [
        {"role": "system", "content": SUMMARY_SYSTEM},
        {"role": "user", "content": f"{ask}\n\n{text}"},
    ]


def combine_messages(partials: list[str], instructions: str | None) -> Messages:
    """Ask for one summary that merges the summaries of a document's parts."""
    joined = "\n\n".join(partials)
    ask = (
        "The paragraphs below summarize consecutive parts of one document. "
        "Write one short summary of the whole document."
    )
    if instructions:
        ask += f" {instructions}"
    return [
        {"role": "system", "content": SUMMARY_SYSTEM},
        {"role": "user", "content": f"{ask}\n\n{joined}"},
    ]


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
        summary_messages(text, instructions, part), max_tokens=max_tokens, temperature=0.2
    )
    return job_result(completion.model, completion.usage, summary=completion.text.strip())


def combine_summaries(
    client: LLMClient, partials: list[str], *, max_tokens: int, instructions: str | None
) -> JSON:
    """Merge the partial summaries of a document into one."""
    completion = client.chat(
        combine_messages(partials, instructions), max_tokens=max_tokens, temperature=0.2
    )
    return job_result(completion.model, completion.usage, summary=completion.text.strip())


@dataclass(frozen=True)
class FanOut:
    """The text does not fit one call: summarize these chunks in parallel, then `combine`."""

    chunks: list[str]
    # Passed to every chunk and to the combine step: max_tokens, instructions, round, usage.
    options: JSON
    # Chunks summarized in earlier rounds plus these (reported as the result's `chunks`).
    chunks_total: int
    context_length: int


def _carried(options: JSON) -> Usage:
    """Usage of earlier rounds, passed along in the options of a multi-round summary."""
    carried = options.get("usage")
    return Usage.from_dict(carried) if carried else Usage()


def _round(
    client: LLMClient, text: str, options: JSON, chunks_so_far: int, plan: SummaryPlan | None
) -> JSON | FanOut:
    """Summarize `text` now if it fits, else fan out over its chunks."""
    plan = plan or plan_summary(client, text, options["max_tokens"])
    if len(plan.chunks) == 1:
        result = summarize_part(
            client,
            text,
            max_tokens=options["max_tokens"],
            instructions=options["instructions"],
            part=None,
        )
        usage = Usage.from_dict(result["usage"]).add(_carried(options))
        return {**result, "usage": usage.as_dict(), "chunks": max(chunks_so_far, 1)}
    if options["round"] >= MAX_ROUNDS:
        raise ContextLengthExceeded(
            f"The summaries still do not fit the context after {MAX_ROUNDS} rounds: lower "
            "max_tokens (SUMMARY_MAX_TOKENS) or raise N_CTX on the server."
        )
    return FanOut(
        chunks=plan.chunks,
        options={**options, "round": options["round"] + 1},
        chunks_total=chunks_so_far + len(plan.chunks),
        context_length=plan.context_length,
    )


def start(ctx: JobContext, inp: SummarizeInput) -> JSON | FanOut:
    """The first round of a summary: the result, or the chunks to fan out."""
    options = {
        "max_tokens": inp.max_tokens or ctx.settings.summary_max_tokens,
        "instructions": inp.instructions,
        "round": 0,
    }
    return _round(ctx.client, inp.text, options, 0, None)


def summarize_chunk(client: LLMClient, text: str, index: int, total: int, options: JSON) -> JSON:
    """One chunk of a long document, as part `index` of `total`."""
    return summarize_part(
        client,
        text,
        max_tokens=options["max_tokens"],
        instructions=options["instructions"],
        part=(index, total),
    )


def combine(client: LLMClient, partials: list[JSON], options: JSON, chunks: int) -> JSON | FanOut:
    """Merge the chunk summaries; another round of chunks if they still do not fit."""
    usage = _carried(options)
    for part in partials:
        usage.add(Usage.from_dict(part["usage"]))
    texts = [part["summary"] for part in partials]
    joined = "\n\n".join(texts)
    plan = plan_summary(client, joined, options["max_tokens"])
    if len(plan.chunks) > 1:
        # Still too long: another round over the partial summaries, carrying the usage so far.
        return _round(client, joined, {**options, "usage": usage.as_dict()}, chunks, plan)
    result = combine_summaries(
        client, texts, max_tokens=options["max_tokens"], instructions=options["instructions"]
    )
    usage.add(Usage.from_dict(result["usage"]))
    return {**result, "usage": usage.as_dict(), "chunks": chunks}


def cli_payload(cli: CliInput) -> JSON:
    """`kcw submit summarize TEXT|@file|- [--max-tokens N]`."""
    return {"text": cli.text, **cli.sampling()}


def long_document() -> str:
    """About 30,000 characters: long enough that `summarize` splits it and runs a chord."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in DOC_TOPICS if name in topics)


DEMO = Demo(
    payload=lambda: {"text": long_document(), "max_tokens": 160},
    brief=lambda payload: f"a document of {len(payload['text']):,} characters",
    highlight=lambda result: f"{result['chunks']} chunks -> {result['summary']}",
)

KIND = register(
    JobKind(
        name="summarize",
        help="a document of any length",
        input_model=SummarizeInput,
        run=start,
        cli_payload=cli_payload,
        demo=DEMO,
        position=20,
    )
)
