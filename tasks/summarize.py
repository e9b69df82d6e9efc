"""`kcw.summarize`: a document of any length.

A document that fits the model's context is summarized in one call. A longer one
is split by the served context length; a Celery chord summarizes the chunks in
parallel, then one step combines the partial summaries (in more rounds if they
still do not fit).
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from celery import chord

from tasks.base import LLMTask
from worker import jobs
from worker.app import app
from worker.config import get_settings
from worker.errors import ContextLengthExceeded
from worker.inputs import SummarizeInput, parse_input
from worker.llm_client import Usage
from worker.runtime import get_client

# Rounds of combining before giving up; each round shrinks the text by about chunks x.
MAX_ROUNDS = 4


def _map_reduce(
    task: LLMTask,
    text: str,
    options: dict[str, Any],
    chunks_so_far: int,
    plan: jobs.SummaryPlan | None = None,
) -> Any:
    """Summarize `text` now if it fits, else replace `task` with a chord over its chunks."""
    client = get_client()
    plan = plan or jobs.plan_summary(client, text, options["max_tokens"])
    if len(plan.chunks) == 1:
        result = jobs.summarize_part(
            client,
            text,
            max_tokens=options["max_tokens"],
            instructions=options["instructions"],
            part=None,
        )
        usage = _usage(result).add(_carried(options))
        return {**result, "usage": usage.as_dict(), "chunks": max(chunks_so_far, 1)}
    if options["round"] >= MAX_ROUNDS:
        raise ContextLengthExceeded(
            f"The summaries still do not fit the context after {MAX_ROUNDS} rounds: lower "
            "max_tokens (SUMMARY_MAX_TOKENS) or raise N_CTX on the server."
        )
    total = len(plan.chunks)
    header = [
        summarize_chunk.s(chunk, index, total, options).set(task_id=str(uuid4()))
        for index, chunk in enumerate(plan.chunks, 1)
    ]
    next_options = {**options, "round": options["round"] + 1}
    task.progress(
        stage=f"summarizing {total} chunks (round {next_options['round']})",
        total=total,
        chunk_ids=[sig.id for sig in header],
        context_length=plan.context_length,
    )
    return task.replace(chord(header, combine_summaries.s(next_options, chunks_so_far + total)))


@app.task(bind=True, base=LLMTask, name="kcw.summarize")
def summarize(self: LLMTask, payload: dict[str, Any]) -> Any:
    """A document in; its summary, the number of chunks and usage out."""
    inp = parse_input(SummarizeInput, "summarize", payload)
    options = {
        "max_tokens": inp.max_tokens or get_settings().summary_max_tokens,
        "instructions": inp.instructions,
        "round": 0,
    }
    return _map_reduce(self, inp.text, options, 0)


@app.task(bind=True, base=LLMTask, name="kcw.summarize.chunk")
def summarize_chunk(
    self: LLMTask, text: str, index: int, total: int, options: dict[str, Any]
) -> dict[str, Any]:
    """One chunk of a long document."""
    return jobs.summarize_part(
        get_client(),
        text,
        max_tokens=options["max_tokens"],
        instructions=options["instructions"],
        part=(index, total),
    )


@app.task(bind=True, base=LLMTask, name="kcw.summarize.combine")
def combine_summaries(
    self: LLMTask, partials: list[dict[str, Any]], options: dict[str, Any], chunks: int
) -> Any:
    """Merge the chunk summaries; another round of chunks if they still do not fit."""
    self.progress(stage=f"combining {len(partials)} summaries", chunks=chunks)
    usage = _carried(options)
    for part in partials:
        usage.add(_usage(part))
    texts = [part["summary"] for part in partials]
    client = get_client()
    joined = "\n\n".join(texts)
    plan = jobs.plan_summary(client, joined, options["max_tokens"])
    if len(plan.chunks) > 1:
        # Still too long: another round over the partial summaries, carrying the usage so far.
        return _map_reduce(self, joined, {**options, "usage": usage.as_dict()}, chunks, plan)
    result = jobs.combine_summaries(
        client, texts, max_tokens=options["max_tokens"], instructions=options["instructions"]
    )
    usage.add(_usage(result))
    return {**result, "usage": usage.as_dict(), "chunks": chunks}


def _usage(result: dict[str, Any]) -> Usage:
    return Usage.from_dict(result["usage"])


def _carried(options: dict[str, Any]) -> Usage:
    """Usage of earlier rounds, passed along in the options of a multi-round summary."""
    carried = options.get("usage")
    return _usage({"usage": carried}) if carried else Usage()
