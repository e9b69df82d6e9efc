"""`kcw.summarize`: a document of any length; long ones fan out as a Celery chord.

The rounds, the chunking and the usage carried between rounds are in
`worker.jobs.summarize`; this module turns its `FanOut` into a chord.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from celery import chord

from tasks.base import LLMTask
from worker.app import app
from worker.jobs import summarize as job
from worker.runtime.process import get_client, job_context

__all__ = ["combine_summaries", "summarize", "summarize_chunk"]


def _finish(task: LLMTask, outcome: dict[str, Any] | job.FanOut) -> Any:
    """Return a finished summary, or replace `task` with a chord over the chunks."""
    if not isinstance(outcome, job.FanOut):
        return outcome
    total = len(outcome.chunks)
    header = [
        summarize_chunk.s(chunk, index, total, outcome.options).set(task_id=str(uuid4()))
        for index, chunk in enumerate(outcome.chunks, 1)
    ]
    task.progress(
        stage=f"summarizing {total} chunks (round {outcome.options['round']})",
        total=total,
        chunk_ids=[sig.id for sig in header],
        context_length=outcome.context_length,
    )
    combine = combine_summaries.s(outcome.options, outcome.chunks_total)
    return task.replace(chord(header, combine))


@app.task(bind=True, base=LLMTask, name=job.KIND.task_name)
def summarize(self: LLMTask, payload: dict[str, Any]) -> Any:
    """A document in; its summary, the number of chunks and usage out."""
    return _finish(self, job.start(job_context(), job.KIND.parse(payload)))


@app.task(bind=True, base=LLMTask, name="kcw.summarize.chunk")
def summarize_chunk(
    self: LLMTask, text: str, index: int, total: int, options: dict[str, Any]
) -> dict[str, Any]:
    """One chunk of a long document."""
    return job.summarize_chunk(get_client(), text, index, total, options)


@app.task(bind=True, base=LLMTask, name="kcw.summarize.combine")
def combine_summaries(
    self: LLMTask, partials: list[dict[str, Any]], options: dict[str, Any], chunks: int
) -> Any:
    """Merge the chunk summaries; another round of chunks if they still do not fit."""
    self.progress(stage=f"combining {len(partials)} summaries", chunks=chunks)
    return _finish(self, job.combine(get_client(), partials, options, chunks))
