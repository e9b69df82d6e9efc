"""`kcw.embed`: embedding vectors, where the server serves them."""

from __future__ import annotations

from typing import Any

from tasks.base import LLMTask
from worker import jobs
from worker.app import app
from worker.inputs import EmbedInput, parse_input
from worker.runtime import get_client


@app.task(bind=True, base=LLMTask, name="kcw.embed")
def embed(self: LLMTask, payload: dict[str, Any]) -> dict[str, Any]:
    """Texts in; one vector per text and usage out."""
    inp = parse_input(EmbedInput, "embed", payload)
    return jobs.embed(get_client(), inp)
