"""`kcw.extract`: JSON that validates against a caller's JSON Schema."""

from __future__ import annotations

from typing import Any

from tasks.base import LLMTask
from worker import jobs
from worker.app import app
from worker.config import get_settings
from worker.inputs import ExtractInput, parse_input
from worker.runtime import get_client


@app.task(bind=True, base=LLMTask, name="kcw.extract")
def extract(self: LLMTask, payload: dict[str, Any]) -> dict[str, Any]:
    """Text plus a schema in; the extracted JSON (`data`) and usage out."""
    inp = parse_input(ExtractInput, "extract", payload)
    return jobs.extract(get_client(), inp, get_settings().extract_max_attempts)
